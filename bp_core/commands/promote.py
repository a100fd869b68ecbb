"""``bp promote``: the champion/challenger gate (or ``--rollback``)."""

from __future__ import annotations

HELP = "promote the 'challenger' model to 'champion' if it beats it on a fresh hold-out (or --rollback)"


def add_arguments(parser) -> None:
    parser.add_argument("--margin", type=float, default=0.002,
                        help="minimum PR AUC gain over the champion (default 0.002)")
    parser.add_argument("--holdout-readings", type=int, default=50_000,
                        help="readings in the simulated hold-out (default 50000)")
    parser.add_argument("--seed", type=int, help="hold-out seed (default: derived from the challenger version)")
    parser.add_argument("--rollback", action="store_true",
                        help="point 'champion' back at 'previous-champion' instead")


def run(args, settings) -> int:
    """Exit 0 whether promoted or rejected (a gate, not a failure); errors exit 1."""
    from mlflow.exceptions import MlflowException

    from bp_core.errors import BPError, UsageError
    from bp_core.model.promotion import promote, rollback

    if args.margin < 0:
        raise UsageError(f"--margin must not be negative, got {args.margin}")
    if args.holdout_readings < 100:
        raise UsageError(f"--holdout-readings must be at least 100, got {args.holdout_readings}")
    try:
        if args.rollback:
            decision = rollback(settings)
        else:
            decision = promote(settings, margin=args.margin, holdout_readings=args.holdout_readings, seed=args.seed)
    except MlflowException as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BPError(f"MLflow ({settings.describe()['mlflow_tracking_uri']}): {first_line}") from exc
    for line in decision.summary():
        print(line)
    return 0
