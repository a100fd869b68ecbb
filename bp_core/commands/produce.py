"""``bp produce``: stream simulated FHIR blood-pressure Observations (and Patients) into Kafka."""

from __future__ import annotations

from bp_core.commands._args import positive
from bp_core.simulation.scenarios import BASELINE, SCENARIO_NAMES

HELP = "stream simulated FHIR blood-pressure Observations (and their Patients) into Kafka"


def add_arguments(parser) -> None:
    parser.add_argument("--count", type=positive(int),
                        help="stop after this many messages (without --rate: readings 4 h apart, the last ending now)")
    parser.add_argument("--rate", type=positive(float), metavar="MSG_PER_S",
                        help="steady rate in messages per second, readings stamped just before they are sent "
                             "(default: as fast as possible, never a reading dated in the future)")
    parser.add_argument("--patients", type=positive(int), default=100, help="cohort size (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the cohort (default 0)")
    parser.add_argument("--duration", type=positive(float), metavar="SECONDS",
                        help="stop after this long (with --count: whichever comes first); neither: run "
                             "until Ctrl-C (without --rate: 7 days of history, then each reading when it is due)")
    parser.add_argument("--scenario", choices=SCENARIO_NAMES, default=BASELINE,
                        help="the simulated world (default baseline; see docs/simulation.md)")


def run(args, settings) -> int:
    import logging
    import sys

    from bp_core.simulation.stream import produce

    if not args.verbose:
        # kafka-python logs every reconnect attempt; failures reach the user as our one line.
        logging.getLogger("kafka").setLevel(logging.CRITICAL)

    summary = produce(settings, count=args.count, rate=args.rate, patients=args.patients, seed=args.seed,
                      duration=args.duration, progress=sys.stderr.isatty(), scenario=args.scenario)
    print(f"bp produce: {summary.line()}", file=sys.stderr)
    if summary.failed:
        return 1
    bounded = args.count is not None or args.duration is not None
    return 130 if summary.interrupted and bounded else 0
