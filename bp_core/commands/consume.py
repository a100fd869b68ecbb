"""``bp consume``: the long-running consumer service."""

from __future__ import annotations

from bp_core.commands._args import positive

HELP = "consume blood-pressure Observations: validate, score, index anomalies, archive normals"


def add_arguments(parser) -> None:
    parser.add_argument("--group", help="consumer group (default: BP_CONSUMER_GROUP or bp-consumer)")
    parser.add_argument("--from-beginning", action="store_true",
                        help="replay the topic from its first retained message (sinks are idempotent)")
    parser.add_argument("--exit-when-idle", type=positive(float), metavar="SECONDS",
                        help="flush, commit and exit 0 after this long without a new message "
                             "(time spent waiting for a sink that is down does not count; "
                             "nor while partitions owned by another member of the group hold unread messages)")
    parser.add_argument("--model-refresh", type=positive(float), default=30.0, metavar="SECONDS",
                        help="how often to check whether the served model alias moved (default 30)")
    parser.add_argument("--metrics-port", type=positive(int), metavar="PORT",
                        help="serve Prometheus metrics on this port (e.g. 9108); off by default")
    parser.add_argument("--batch-size", type=positive(int), default=5000,
                        help="maximum messages per batch (default 5000)")


def run(args, settings) -> int:
    from bp_core.consumer.service import ConsumerOptions, ConsumerService

    if args.group:
        settings = settings.with_(consumer_group=args.group)
    options = ConsumerOptions(
        from_beginning=args.from_beginning,
        exit_when_idle=args.exit_when_idle,
        model_refresh=args.model_refresh,
        metrics_port=args.metrics_port,
        batch_size=args.batch_size,
    )
    return ConsumerService(settings, options).run()
