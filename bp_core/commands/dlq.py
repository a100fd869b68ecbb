"""``bp dlq``: inspect the dead-letter topic, and replay it once the cause is fixed."""

from __future__ import annotations

from bp_core.commands._args import positive

HELP = "inspect the dead-letter topic (show) or send its messages back to the topic (replay)"


def add_arguments(parser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=type(parser))
    actions.required = True
    show = actions.add_parser("show", help="count the dead letters by reason and list the last ones "
                                           "(never their content)",
                              description="Count the dead letters by stage and reason and list the last "
                                          "ones: DLQ offset, time, stage, source position, size, reason. "
                                          "Message contents are not printed (they may name a patient).")
    _filters(show)
    show.add_argument("--limit", type=positive(int), default=20, metavar="N",
                      help="list the last N matching dead letters (default 20)")
    replay = actions.add_parser(
        "replay", help="send dead letters back to the topic, each once (after fixing their cause)",
        description="Send the dead letters after the group's position back to BP_TOPIC (original key and "
                    "bytes, header bp.replay.of), each exactly once: an interrupted replay is taken up "
                    "where it stopped. Those not matching --stage/--reason are passed over for good, in "
                    "this group. Run one replay at a time per group.")
    _filters(replay)
    replay.add_argument("--group", default=None, metavar="NAME",
                        help="consumer group that keeps the replay's place in the DLQ (default bp-dlq-replay)")
    replay.add_argument("--dry-run", action="store_true", help="count what would be sent; send and commit nothing")


def _filters(parser) -> None:
    from bp_core.dead_letters.reader import STAGES

    parser.add_argument("--stage", choices=STAGES,
                        help="only dead letters of this stage (parse: not a usable Observation; "
                             "index: refused by Elasticsearch)")
    parser.add_argument("--reason", metavar="TEXT", help="only dead letters whose reason contains TEXT (any case)")


def run(args, settings) -> int:
    from kafka.errors import KafkaError

    from bp_core.errors import BPError

    try:
        return _show(args, settings) if args.action == "show" else _replay(args, settings)
    except (KafkaError, TimeoutError) as exc:
        raise BPError(f"Kafka at {settings.kafka_bootstrap}: {exc}") from exc


def _show(args, settings) -> int:
    from collections import deque

    from bp_core.dead_letters.reader import Summary, read_dead_letters

    summary, last = Summary(), deque(maxlen=args.limit)
    for letter in read_dead_letters(settings.kafka_bootstrap, settings.dlq_topic):
        if letter.matches(args.stage, args.reason):
            summary.add(letter)
            last.append(letter)
    what = " ".join(filter(None, [f"stage {args.stage}" if args.stage else "",
                                  f"reason containing {args.reason!r}" if args.reason else ""]))
    print(f"{settings.dlq_topic}: {summary.total} dead letters" + (f" ({what})" if what else ""))
    if not summary.total:
        return 0
    print()
    print(f"{'count':>7}  {'stage':5}  reason")
    for (stage, kind), count in summary.by_kind.most_common():
        print(f"{count:>7}  {stage:5}  {kind}")
    print()
    width = max(len(letter.source) for letter in last)
    print(f"last {len(last)}:")
    print(f"{'DLQ offset':<10}  {'rejected at (UTC)':19}  {'stage':5}  {'source':{width}}  {'bytes':>7}  reason")
    for letter in last:
        size = "null" if letter.value is None else str(len(letter.value))
        reason = letter.reason if len(letter.reason) <= 100 else letter.reason[:97] + "..."
        print(f"{f'{letter.partition}:{letter.offset}':<10}  {_when(letter.rejected_at):19}  {letter.stage or '?':5}  "
              f"{letter.source:{width}}  {size:>7}  {reason}")
    return 0


def _when(iso: str) -> str:
    """``2026-11-30T00:31:04.095878+00:00`` -> ``2026-11-30 00:31:04`` (as written, if not ISO)."""
    from datetime import datetime, timezone

    try:
        return datetime.fromisoformat(iso).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return iso[:19]


def _replay(args, settings) -> int:
    from bp_core.dead_letters.replay import DEFAULT_GROUP, DeadLetterReplay

    group = args.group or DEFAULT_GROUP
    replay = DeadLetterReplay(settings, group=group, stage=args.stage, reason=args.reason, dry_run=args.dry_run)
    summary = replay.run()
    verb = "would replay" if summary.dry_run else "replayed"
    stages = ", ".join(f"{stage} {n}" for stage, n in sorted(summary.replayed.items()))
    print(f"{settings.dlq_topic} -> {settings.topic} (group {group}): read {summary.read} dead letters, "
          f"{verb} {summary.sent}" + (f" ({stages})" if stages else ""))
    if summary.passed_over:
        print(f"passed over {summary.passed_over} not matching the filters" +
              ("" if summary.dry_run else " (this group will not read them again)"))
    if summary.already:
        print(f"not sent again: {summary.already} sent by an interrupted replay")
    if summary.unsendable:
        print(f"not replayable: {summary.unsendable} with neither key nor value")
    positions = ", ".join(f"{p}:{o}" for p, o in sorted(summary.positions.items()))
    if summary.dry_run:
        print(f"would move the group to {positions} in {settings.dlq_topic} (dry run: nothing sent or committed)")
    else:
        print(f"position in {settings.dlq_topic}: {positions}")
    return 0
