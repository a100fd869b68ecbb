"""``bp generate``: write a labelled synthetic data set (parquet + manifest [+ FHIR])."""

from __future__ import annotations

from bp_core.simulation.scenarios import BASELINE, SCENARIO_NAMES

HELP = "simulate a cohort and write a labelled data set (readings.parquet, manifest.json)"


def _positive_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def add_arguments(parser) -> None:
    parser.add_argument("--patients", type=_positive_int, default=1000, help="cohort size (default 1000)")
    parser.add_argument("--readings", type=_positive_int, default=100_000, help="readings to simulate (default 100000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed: same seed, same data set (default 0)")
    parser.add_argument("--out", required=True, metavar="PATH", help="output directory")
    parser.add_argument("--start", metavar="ISO", help="first reading time, ISO-8601, no offset means UTC "
                        "(default 2025-01-01T00:00Z, or ending at today's midnight UTC when that would "
                        "reach the future)")
    parser.add_argument("--scenario", choices=SCENARIO_NAMES, default=BASELINE,
                        help="the simulated world (default baseline; see docs/simulation.md)")
    parser.add_argument("--fhir", action="store_true", help="also write observations.ndjson (FHIR Observations)")


def parse_start(text: str | None):
    """``--start`` as an aware datetime (naive means UTC), or None.

    Raises:
        UsageError: not an ISO-8601 date or date-time.
    """
    from datetime import datetime, timezone

    from bp_core.errors import UsageError

    if text is None:
        return None
    try:
        start = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--start is not an ISO-8601 date-time: {text!r}") from None
    return start if start.tzinfo else start.replace(tzinfo=timezone.utc)


def run(args, settings) -> int:
    import sys
    import time

    from bp_core.simulation.datasets import generate_dataset, read_manifest
    from bp_core.errors import UsageError

    start = parse_start(args.start)
    began = time.perf_counter()
    try:
        out = generate_dataset(args.out, patients=args.patients, readings=args.readings, seed=args.seed,
                               start=start, fhir=args.fhir, scenario=args.scenario)
    except OSError as exc:
        raise UsageError(f"cannot write --out {args.out}: {exc.strerror or exc}") from exc
    manifest = read_manifest(out)
    print(f"wrote {manifest['readings']} readings of {manifest['patients']} patients ({manifest['scenario']}, "
          f"{manifest['start']} to {manifest['end']}) to {out} "
          f"(label rate {manifest['label_rate']:.3f}, {time.perf_counter() - began:.1f} s)", file=sys.stderr)
    return 0
