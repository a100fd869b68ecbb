"""``bp drift``: compare the live readings of a window with the champion's training data."""

from __future__ import annotations

HELP = "compare the readings ingested in a window with the champion's training data (drift)"


def add_arguments(parser) -> None:
    parser.add_argument("--since", default="24h", metavar="DURATION",
                        help="window length back from now, by ingestion time: 90m, 24h, 7d... (default 24h)")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")


def run(args, settings) -> int:
    import json

    from bp_core.drift import check_drift, parse_duration

    since = parse_duration(args.since)  # UsageError: exit 2
    try:
        report = check_drift(settings, since=since)
    except Exception as exc:
        _reraise_mlflow(exc, settings)
        raise
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.table())
    return 0


def _reraise_mlflow(exc: Exception, settings) -> None:
    """An MLflow store failure as a one-line ``BPError``; anything else is left alone."""
    from bp_core.errors import BPError

    try:
        from mlflow.exceptions import MlflowException
    except ImportError:  # pragma: no cover
        return
    if isinstance(exc, MlflowException):
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BPError(f"MLflow ({settings.describe()['mlflow_tracking_uri']}): {first_line}") from exc
