"""``bp train``: train the single-reading and the context classifier on one split, track
both in MLflow, register one (the context model by default) as 'challenger'."""

from __future__ import annotations

HELP = "train the anomaly classifiers (tracked in MLflow) and register one as 'challenger'"


def add_arguments(parser) -> None:
    parser.add_argument("--data", metavar="PATH", help="data set (folder or readings.parquet); "
                        "default: simulate a fresh one under $BP_DATA_DIR/training/<timestamp>")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the simulation, split and solver (default 0)")
    parser.add_argument("--patients", type=int, default=500, help="patients to simulate without --data (default 500)")
    parser.add_argument("--readings", type=int, default=40_000, help="readings to simulate without --data (default 40000)")
    parser.add_argument("-C", dest="C", type=float, default=1.0, help="inverse L2 regularisation strength (default 1.0)")
    parser.add_argument("--features", choices=("context", "single-reading"), default="context",
                        help="the model to register: with the patient's 7-day context (default) or the reading alone")
    parser.add_argument("--export", metavar="PATH", help="also write the fitted pipeline with joblib (e.g. bp_logreg.pkl), "
                        "servable with BP_MODEL_PATH")


def run(args, settings) -> int:
    from datetime import datetime, timezone
    from pathlib import Path

    from bp_core.errors import BPError, UsageError

    if args.C <= 0:
        raise UsageError(f"-C must be positive, got {args.C}")
    if args.data:
        data_path = Path(args.data)
        if not data_path.exists():
            raise UsageError(f"--data {args.data}: no such file or folder")
    else:
        if args.patients < 2 or args.readings < args.patients:
            raise UsageError("--patients must be at least 2 and --readings at least --patients")
        from bp_core.simulation.datasets import generate_dataset

        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        data_path = generate_dataset(Path(settings.data_dir) / "training" / stamp, patients=args.patients,
                                     readings=args.readings, seed=args.seed)
        print(f"simulated {args.readings:,} readings of {args.patients} patients into {data_path}")

    from mlflow.exceptions import MlflowException

    from bp_core.model.training import train_and_register

    try:
        result = train_and_register(settings, data_path, seed=args.seed, C=args.C, feature_set=args.features)
    except MlflowException as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BPError(f"MLflow ({settings.describe()['mlflow_tracking_uri']}): {first_line}") from exc
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    print(f"registered {settings.model_name} version {result.model_version} ({result.feature_set} features) as "
          f"'challenger' (run {result.run_id}, {result.rows:,} readings, {result.seconds:.1f}s)")
    context, single = ((result.metrics, result.other_metrics) if result.feature_set == "context"
                       else (result.other_metrics, result.metrics))
    print(f"{'hold-out metric':<20}{'context':>10}{'single':>10}{'rules only':>12}")
    for key in ("pr_auc", "roc_auc", "f1", "precision", "recall", "brier", "crisis_recall", "hypotension_recall"):
        rules = result.rules_metrics.get(key)
        print(f"{key:<20}{_fmt(context.get(key)):>10}{_fmt(single.get(key)):>10}{_fmt(rules):>12}")
    alarms = result.false_alarms
    print(f"{'false alarms':<20}{_count(alarms.get('false_alarms_at_equal_recall_context')):>10}"
          f"{_count(alarms.get('false_alarms_at_equal_recall_single_reading')):>10}"
          f"   (both at recall {_fmt(alarms.get('equal_recall'))})")
    if args.export:
        import joblib

        export = Path(args.export)
        export.parent.mkdir(parents=True, exist_ok=True)
        joblib.dump(result.model, export)
        print(f"exported the pipeline to {export} (serve it with BP_MODEL_PATH={export})")
    return 0


def _fmt(value) -> str:
    return "n/a" if value is None or value != value else f"{value:.4f}"


def _count(value) -> str:
    return "n/a" if value is None or value != value else f"{value:,.0f}"
