"""``bp setup``: create the topics and the index template (idempotent)."""

from __future__ import annotations

HELP = ("create the Kafka topics (readings, DLQ, alerts, compacted patients) and the Elasticsearch "
        "index template (idempotent)")


def add_arguments(parser) -> None:
    parser.add_argument("--partitions", type=int, default=3,
                        help="partitions of the readings topic when created (default 3); "
                             "the alerts and patients topics get as many as it has")
    parser.add_argument("--kibana", metavar="URL", help="also import the Kibana saved objects into this Kibana")


def run(args, settings) -> int:
    from bp_core.errors import UsageError
    from bp_core.provisioning import ensure_elasticsearch, ensure_topics

    if args.partitions < 1:
        raise UsageError(f"--partitions must be at least 1, got {args.partitions}")
    for line in ensure_topics(settings, partitions=args.partitions):
        print(line)
    for line in ensure_elasticsearch(settings):
        print(line)
    if args.kibana:
        from bp_core.kibana import import_saved_objects

        for line in import_saved_objects(args.kibana, settings):
            print(line)
    return 0
