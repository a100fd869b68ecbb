"""``bp promote``: the promotion gate, an operator's override, a rollback, or the evidence.

- ``bp promote``                              judge the challenger (docs/model-lifecycle.md)
- ``bp promote --version N --reason TEXT``    make version N champion without the gate
- ``bp promote --rollback [--reason TEXT]``   back to previous-champion; that version stays out
- ``bp promote --evidence``                   print the challenger's shadow evidence, change nothing

Exit 0 for any decision (promoted, rejected, deferred: the gate did its job); a usage
error exits 2, any other failure 1 with one line, nothing moved.
"""

from __future__ import annotations

HELP = "judge the 'challenger' model and promote it to 'champion' if it passes the gate (or --rollback, --version)"


def add_arguments(parser) -> None:
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--rollback", action="store_true",
                        help="point 'champion' back at 'previous-champion'; the gate never promotes the "
                             "rolled-back version again")
    action.add_argument("--version", type=int, metavar="N",
                        help="make version N champion without the gate (needs --reason); brings back a "
                             "rolled-back version")
    action.add_argument("--evidence", action="store_true",
                        help="print the challenger's live shadow evidence and exit (changes nothing)")
    parser.add_argument("--reason", metavar="TEXT", help="why (recorded with --version and --rollback)")
    parser.add_argument("--margin", type=float,
                        help="minimum PR AUC gain over the champion (default 0.002, bp_core.model.gate)")
    parser.add_argument("--holdout-readings", type=int, default=50_000,
                        help="readings in the simulated hold-out (default 50000)")
    parser.add_argument("--seed", type=int, help="hold-out seed (default: derived from the challenger version)")


def run(args, settings) -> int:
    import os

    from mlflow.exceptions import MlflowException

    from bp_core.errors import BPError, UsageError
    from bp_core.model import promotion

    if args.margin is not None and args.margin < 0:
        raise UsageError(f"--margin must not be negative, got {args.margin}")
    if args.holdout_readings < 100:
        raise UsageError(f"--holdout-readings must be at least 100, got {args.holdout_readings}")
    if args.reason is not None and not (args.rollback or args.version is not None):
        raise UsageError("--reason goes with --version or --rollback")
    if settings.mlflow_tracking_uri.startswith(("http://", "https://")):
        # An operator at a terminal: a tracking server that is down fails in seconds, not
        # after MLflow's default 7 retries (minutes). The environment can still say otherwise.
        import logging

        from bp_core.model.serving import FAST_FAIL_ENV

        for key, value in FAST_FAIL_ENV.items():
            os.environ.setdefault(key, value)
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)  # each retry; the failure is ours to say
    try:
        if args.evidence:
            lines = _evidence(settings)
        elif args.rollback:
            lines = promotion.rollback(settings, reason=args.reason).summary()
        elif args.version is not None:
            lines = promotion.promote_version(settings, str(args.version), reason=args.reason or "").summary()
        else:
            margin = {} if args.margin is None else {"margin": args.margin}
            lines = promotion.promote(settings, holdout_readings=args.holdout_readings, seed=args.seed,
                                      **margin).summary()
    except (MlflowException, OSError) as exc:
        raise BPError(f"MLflow ({settings.describe()['mlflow_tracking_uri']}): {_first_line(exc)}; "
                      f"nothing changed") from exc
    for line in lines:
        print(line)
    return 0


def _evidence(settings) -> list[str]:
    from bp_core.errors import ModelUnavailable
    from bp_core.model.registry import CHALLENGER, CHAMPION, client_for, get_alias_version
    from bp_core.model.shadow import read_evidence

    client = client_for(settings.mlflow_tracking_uri)
    challenger = get_alias_version(client, settings.model_name, CHALLENGER)
    if challenger is None:
        raise ModelUnavailable(f"no '{CHALLENGER}' version of model {settings.model_name!r}: run `bp train` first")
    champion = get_alias_version(client, settings.model_name, CHAMPION)
    if champion == challenger:
        return [f"challenger version {challenger} is the champion: nothing is shadow-scored"]
    return read_evidence(client, settings.model_name, challenger, champion).lines()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if "Max retries exceeded" in text or "Connection refused" in text or "Read timed out" in text:
        return "the tracking server does not answer (connection refused or timed out)"
    return (text.splitlines() or [type(exc).__name__])[0][:300]
