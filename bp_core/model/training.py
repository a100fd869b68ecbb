"""Train the anomaly classifier, track the run in MLflow, register it as 'challenger'.

``StandardScaler`` -> ``LogisticRegression`` on the features of the measured values (and
the patient's context); target: the simulator's truth. The single-reading and the
context model are fitted on one patient split and logged together; the registered one
(the context model by default) becomes ``challenger``. The choices (split by patient, no
class weights, skops serialization): docs/internals.md#training. No Airflow imports: DAG
tasks call ``train_and_register``.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bp_core.features import (FEATURE_NAMES, FEATURE_SETS, feature_names_for_width, feature_set_name, model_matrix,
                               uses_context)
from bp_core.model.metrics import classification_metrics, confusion_counts, false_alarms_at_equal_recall
from bp_core.settings import Settings

log = logging.getLogger(__name__)

EXPERIMENT_NAME = "bp-anomaly"
HOLDOUT_FRACTION = 0.2
MAX_ITER = 1000
CLASS_WEIGHT: str | None = None
SERIALIZATION_FORMAT = "skops"
DEFAULT_FEATURE_SET = "context"
BASELINE_SCENARIO = "baseline"  # a data set whose manifest names no scenario


@dataclass(frozen=True)
class TrainingResult:
    """What one training run produced."""

    run_id: str
    model_version: str
    metrics: dict[str, float]
    rules_metrics: dict[str, float]
    rows: int
    seconds: float
    model: Any = field(default=None, repr=False, compare=False)  # the fitted Pipeline
    feature_set: str = DEFAULT_FEATURE_SET
    other_metrics: dict[str, float] = field(default_factory=dict)  # the other feature set's model
    false_alarms: dict[str, float] = field(default_factory=dict)   # false_alarms_at_equal_recall


@dataclass(frozen=True)
class FitOutcome:
    """A fitted pipeline and its hold-out evaluation (no MLflow involved)."""

    pipeline: Any
    metrics: dict[str, float]
    rules_metrics: dict[str, float]
    train_rows: int
    holdout_rows: int
    holdout_patients: int
    y_holdout: np.ndarray = field(repr=False)
    p_holdout: np.ndarray = field(repr=False)
    feature_names: tuple[str, ...] = FEATURE_NAMES


@dataclass(frozen=True)
class ComparedFits:
    """The single-reading and the context model fitted and evaluated on one split."""

    single_reading: FitOutcome
    context: FitOutcome
    rules_with_context_metrics: dict[str, float]  # the rules plus rise/drop from baseline
    false_alarms: dict[str, float]                # false_alarms_at_equal_recall(single reading -> context)
    context_seconds: float                        # computing the data set's context

    def outcome(self, feature_set: str) -> FitOutcome:
        """The fit of one feature set (``single-reading`` or ``context``)."""
        return self.context if feature_set == "context" else self.single_reading


# ---------------------------------------------------------------------------- pure parts


def build_pipeline(*, C: float = 1.0, seed: int = 0):
    """A fresh, unfitted StandardScaler + LogisticRegression pipeline.

    Args:
        C: inverse L2 regularisation strength.
        seed: random state of the solver.
    Returns:
        A ``sklearn.pipeline.Pipeline`` with steps ``scale`` and ``logreg``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return Pipeline([
        ("scale", StandardScaler()),
        ("logreg", LogisticRegression(C=C, max_iter=MAX_ITER, class_weight=CLASS_WEIGHT, random_state=seed)),
    ])


def frame_context(frame: pd.DataFrame):
    """The context columns of every reading of a data set (``bp_core.context``), row-aligned."""
    from bp_core.context import context_of_frame

    return context_of_frame(frame)


def frame_features(frame: pd.DataFrame, feature_names=FEATURE_NAMES, context=None) -> np.ndarray:
    """The input matrix of a readings frame (measured values) for a feature set.

    ``context``: the frame's ``ContextColumns``; computed from the frame when the
    features need it and it is not given.
    """
    if context is None and uses_context(feature_names):
        context = frame_context(frame)
    return model_matrix(frame["systolic_mm_hg"].to_numpy(np.float64), frame["diastolic_mm_hg"].to_numpy(np.float64),
                        context, feature_names)


def model_scores(estimator, frame: pd.DataFrame, feature_names=None, context=None) -> np.ndarray:
    """P(anomaly) for every reading of a frame: the serving fast path, column 1.

    ``feature_names``: the estimator's features; by default told by its input width.
    """
    if feature_names is None:
        feature_names = feature_names_for_width(getattr(estimator, "n_features_in_", len(FEATURE_NAMES)))
    return estimator.predict_proba(frame_features(frame, feature_names, context))[:, 1]


def rules_scores(frame: pd.DataFrame, settings: Settings, context=None) -> np.ndarray:
    """The clinical thresholds' flags as a 0/1 float score (the rules-only baseline);
    with ``context``, the rise and drop from baseline count too."""
    from bp_core.rules import Thresholds, rule_anomaly_mask

    mask = rule_anomaly_mask(frame["systolic_mm_hg"].to_numpy(np.float64),
                             frame["diastolic_mm_hg"].to_numpy(np.float64), Thresholds.from_settings(settings),
                             None if context is None else context.baseline_systolic,
                             None if context is None else context.baseline_diastolic)
    return np.asarray(mask, dtype=np.float64)


def evaluate(scores: np.ndarray, frame: pd.DataFrame, threshold: float) -> dict[str, float]:
    """``classification_metrics`` of scores against a frame's labels and categories."""
    return classification_metrics(frame["label"].to_numpy(), scores, threshold=threshold,
                                  true_category=frame["true_category"].to_numpy())


def split_indices(frame: pd.DataFrame, *, seed: int,
                  holdout_fraction: float = HOLDOUT_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """Row positions of train and hold-out so no patient is in both.

    Args:
        frame: readings with a ``patient_id`` column.
        seed: random state of the split.
        holdout_fraction: share of *patients* held out.
    Returns:
        (train positions, hold-out positions).
    Raises:
        ValueError: fewer than two patients.
    """
    from sklearn.model_selection import GroupShuffleSplit

    groups = frame["patient_id"].to_numpy()
    if len(np.unique(groups)) < 2:
        raise ValueError("need at least two patients to hold some out")
    splitter = GroupShuffleSplit(n_splits=1, test_size=holdout_fraction, random_state=seed)
    return next(splitter.split(np.zeros(len(frame)), groups=groups))


def split_by_patient(frame: pd.DataFrame, *, seed: int,
                     holdout_fraction: float = HOLDOUT_FRACTION) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``split_indices`` as (train, holdout) frames.

    Raises:
        ValueError: fewer than two patients.
    """
    train_idx, holdout_idx = split_indices(frame, seed=seed, holdout_fraction=holdout_fraction)
    return frame.iloc[train_idx], frame.iloc[holdout_idx]


def _fit_on_split(frame: pd.DataFrame, train_idx: np.ndarray, holdout_idx: np.ndarray, features: np.ndarray,
                  feature_names: tuple[str, ...], rules_metrics: dict[str, float], settings: Settings, *, seed: int,
                  C: float) -> FitOutcome:
    y = frame["label"].to_numpy(np.int64)
    y_train = y[train_idx]
    if len(np.unique(y_train)) < 2:
        raise ValueError("the training data holds a single class: cannot fit a classifier")
    pipeline = build_pipeline(C=C, seed=seed)
    pipeline.fit(features[train_idx], y_train)
    holdout = frame.iloc[holdout_idx]
    p_holdout = pipeline.predict_proba(features[holdout_idx])[:, 1]
    return FitOutcome(
        pipeline=pipeline,
        metrics=evaluate(p_holdout, holdout, settings.model_threshold),
        rules_metrics=rules_metrics,
        train_rows=len(train_idx),
        holdout_rows=len(holdout_idx),
        holdout_patients=int(holdout["patient_id"].nunique()),
        y_holdout=y[holdout_idx],
        p_holdout=p_holdout,
        feature_names=tuple(feature_names),
    )


def fit_and_evaluate(frame: pd.DataFrame, settings: Settings, *, seed: int = 0, C: float = 1.0,
                     feature_names=FEATURE_NAMES, context=None) -> FitOutcome:
    """Split by patient, fit one pipeline, evaluate it and the rules on the hold-out.

    Args:
        frame: readings in the data-set contract (``bp_core.simulation.datasets``).
        settings: thresholds and ``model_threshold``.
        seed: split and solver random state.
        C: inverse regularisation strength.
        feature_names: the feature set (default: the single-reading one).
        context: the frame's ``ContextColumns`` (computed when needed and not given).
    Returns:
        A ``FitOutcome``.
    Raises:
        ValueError: too few patients, or the training part holds a single class.
    """
    train_idx, holdout_idx = split_indices(frame, seed=seed)
    features = frame_features(frame, feature_names, context)
    holdout = frame.iloc[holdout_idx]
    rules_metrics = evaluate(rules_scores(holdout, settings), holdout, 0.5)
    return _fit_on_split(frame, train_idx, holdout_idx, features, tuple(feature_names), rules_metrics, settings,
                         seed=seed, C=C)


def fit_both(frame: pd.DataFrame, settings: Settings, *, seed: int = 0, C: float = 1.0) -> ComparedFits:
    """Fit the single-reading and the context model on one split and compare them.

    Args:
        frame: readings in the data-set contract, with each patient's history.
        settings: thresholds and ``model_threshold``.
        seed: split and solver random state.
        C: inverse regularisation strength (both models).
    Returns:
        A ``ComparedFits``: both fits, the rules with context, and the false alarms of
        each model at the recall the single-reading model reaches at ``model_threshold``.
    Raises:
        ValueError: too few patients, or the training part holds a single class.
    """
    train_idx, holdout_idx = split_indices(frame, seed=seed)
    started = time.monotonic()
    context = frame_context(frame)
    context_seconds = time.monotonic() - started
    holdout = frame.iloc[holdout_idx]
    holdout_context = context.take(holdout_idx)
    rules_metrics = evaluate(rules_scores(holdout, settings), holdout, 0.5)
    fits = {name: _fit_on_split(frame, train_idx, holdout_idx, frame_features(frame, names, context), names,
                                rules_metrics, settings, seed=seed, C=C)
            for name, names in FEATURE_SETS.items()}
    single, with_context = fits["single-reading"], fits["context"]
    return ComparedFits(
        single_reading=single,
        context=with_context,
        rules_with_context_metrics=evaluate(rules_scores(holdout, settings, holdout_context), holdout, 0.5),
        false_alarms=false_alarms_at_equal_recall(single.y_holdout, single.p_holdout, with_context.p_holdout,
                                                  threshold=settings.model_threshold),
        context_seconds=context_seconds,
    )


# ---------------------------------------------------------------------------- figures


def confusion_figure(y_true: np.ndarray, scores: np.ndarray, threshold: float):
    """A matplotlib Figure of the confusion matrix at the threshold (Agg backend)."""
    from matplotlib.figure import Figure

    counts = confusion_counts(y_true, scores, threshold)
    fig = Figure(figsize=(4.2, 3.6), dpi=100)
    ax = fig.add_subplot()
    ax.imshow(counts, cmap="Blues")
    for (row, col), value in np.ndenumerate(counts):
        ax.text(col, row, f"{value:,}", ha="center", va="center",
                color="white" if value > counts.max() / 2 else "black")
    ax.set_xticks([0, 1], ["normal", "anomaly"])
    ax.set_yticks([0, 1], ["normal", "anomaly"])
    ax.set_xlabel(f"predicted (P >= {threshold:g})")
    ax.set_ylabel("true (noise-free)")
    ax.set_title("Hold-out confusion matrix")
    fig.tight_layout()
    return fig


def calibration_figure(y_true: np.ndarray, scores: np.ndarray, bins: int = 10):
    """A matplotlib Figure of the reliability diagram (Agg backend)."""
    from matplotlib.figure import Figure
    from sklearn.calibration import calibration_curve

    fig = Figure(figsize=(4.2, 3.6), dpi=100)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect")
    if 0 < int(np.sum(y_true)) < len(y_true):
        observed, predicted = calibration_curve(y_true, scores, n_bins=bins, strategy="uniform")
        ax.plot(predicted, observed, marker="o", label="model")
    ax.set_xlabel("mean predicted P(anomaly)")
    ax.set_ylabel("observed anomaly rate")
    ax.set_title("Hold-out calibration")
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig


def precision_recall_figure(y_true: np.ndarray, curves: dict[str, np.ndarray]):
    """A matplotlib Figure of the precision-recall curves of several scorers (Agg backend)."""
    from matplotlib.figure import Figure
    from sklearn.metrics import precision_recall_curve

    fig = Figure(figsize=(4.2, 3.6), dpi=100)
    ax = fig.add_subplot()
    for label, scores in curves.items():
        precision, recall, _ = precision_recall_curve(y_true, scores)
        ax.plot(recall, precision, label=label)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("Hold-out precision-recall")
    ax.legend(loc="lower left")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------- MLflow


def ensure_experiment(client, settings: Settings, name: str = EXPERIMENT_NAME) -> str:
    """The id of experiment ``name`` (``bp-anomaly``), created when missing.

    With a local store (sqlite/file) the artifact location is set explicitly to
    ``settings.data_dir/mlflow/artifacts``; with a tracking server the server's artifact
    store applies (a client-side path would be wrong for other containers).

    Args:
        client: an ``MlflowClient``.
        settings: tracking URI and data folder.
    Returns:
        The experiment id.
    Raises:
        MlflowException: the store failed.
    """
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    artifact_location = None
    if not settings.mlflow_tracking_uri.startswith(("http://", "https://", "databricks")):
        artifacts = (Path(settings.data_dir) / "mlflow" / "artifacts").resolve()
        artifacts.mkdir(parents=True, exist_ok=True)
        artifact_location = artifacts.as_uri()
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return client.get_experiment_by_name(name).experiment_id  # created concurrently


def _load(data_path: Path) -> pd.DataFrame:
    from bp_core.simulation.datasets import load_dataset

    return load_dataset(data_path)


def _manifest_tags(data_path: Path) -> dict[str, str]:
    """The data set manifest's digest, seed and scenario as run tags; none for a bare
    parquet file."""
    from bp_core.simulation.datasets import read_manifest

    try:
        manifest = read_manifest(data_path)
    except FileNotFoundError:
        return {}
    tags = {f"dataset.manifest.{key}": str(manifest[key]) for key in ("sha256", "seed", "patients", "readings")
            if key in manifest}
    tags["dataset.scenario"] = str(manifest.get("scenario") or BASELINE_SCENARIO)
    return tags


def _dataset_input(frame: pd.DataFrame, data_path: Path):
    """The data set as an MLflow input: digest and row count of the full frame.

    MLflow infers a pandas data set's schema value by value in Python (about 2 minutes
    for a million readings), so the schema is inferred from the first 10,000 rows, which
    have the same columns and types, and set as the data set's (cached) ``schema``.
    """
    import mlflow.data

    source = str(data_path.resolve())
    with warnings.catch_warnings():
        # "source can be interpreted in multiple ways" (a local path: it is one) and the
        # integer-columns hint (the data set has no missing values): noise on every run.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow\.")
        dataset = mlflow.data.from_pandas(frame, source=source, targets="label", name=data_path.name)
        sample = mlflow.data.from_pandas(frame.head(10_000), source=source, targets="label")
        dataset.__dict__["schema"] = sample.schema
    return dataset


def _pip_requirements() -> list[str]:
    """Pinned requirements of the logged model (explicit: inference takes seconds)."""
    import mlflow
    import numpy
    import sklearn
    import skops

    return [f"mlflow-skinny=={mlflow.__version__}", f"scikit-learn=={sklearn.__version__}",
            f"skops=={skops.__version__}", f"numpy=={numpy.__version__}"]


def _finite(metrics: dict[str, float], prefix: str = "") -> dict[str, float]:
    """Metrics for ``log_metrics``: undefined (nan) figures are left out, not logged as nan."""
    return {f"{prefix}{k}": float(v) for k, v in metrics.items() if v == v}


def _signature_and_example(pipeline, feature_names: tuple[str, ...]):
    """A column signature named after the features (serving reads the names from it) and
    an input example: a normal reading, a crisis and a hypotensive one, without history."""
    from mlflow.models import infer_signature

    example = pd.DataFrame(model_matrix(np.array([120.0, 185.0, 85.0]), np.array([80.0, 125.0, 55.0]), None,
                                        feature_names), columns=list(feature_names))
    return infer_signature(example, pipeline.predict_proba(example.to_numpy())), example


def _log_model(outcome: FitOutcome, name: str, registered_model_name: str | None):
    import mlflow.sklearn

    signature, example = _signature_and_example(outcome.pipeline, outcome.feature_names)
    with warnings.catch_warnings():
        # MLflow checks the example through the pipeline as a DataFrame; the pipeline was
        # fitted on arrays (the serving fast path) and says so.
        warnings.filterwarnings("ignore", message="X has feature names", category=UserWarning)
        return mlflow.sklearn.log_model(
            outcome.pipeline,
            name=name,
            registered_model_name=registered_model_name,
            signature=signature,
            input_example=example,
            serialization_format=SERIALIZATION_FORMAT,
            pip_requirements=_pip_requirements(),
            pyfunc_predict_fn="predict_proba",
        )


def _prefix(feature_set: str) -> str:
    return feature_set.replace("-", "_") + "_"


def train_and_register(settings: Settings, data_path: Path, *, seed: int = 0, C: float = 1.0,
                       feature_set: str = DEFAULT_FEATURE_SET) -> TrainingResult:
    """Train both models on a data set, log the run in MLflow, register one as 'challenger'.

    Fits the single-reading and the context model on the same split (``fit_both``). The
    run logs params (the registered model's features and feature set, C, class_weight,
    seed, rows, threshold...), the hold-out metrics of the registered model, of the
    other one (prefixed by its feature set: ``single_reading_`` or ``context_``), of the
    rules alone (``rules_``) and with the rise/drop from baseline
    (``rules_with_context_``), the false alarms of both at equal recall
    (``false_alarms_at_equal_recall_single_reading`` / ``_context``, at recall
    ``equal_recall``), the data set as a run input (with its digest), confusion-matrix,
    calibration and precision-recall PNGs, and both models (``model``, registered as
    ``settings.model_name``, and ``<feature set>_model``, not registered), each with a
    column signature over its features. The new version gets alias ``challenger`` and
    tags with its feature set, features, the data set's scenario and its figures.

    Args:
        settings: tracking URI, model name, thresholds, data folder.
        data_path: the data set (folder or parquet file, see ``bp_core.simulation.datasets``).
        seed: split and solver random state.
        C: inverse regularisation strength.
        feature_set: the model to register, ``context`` (default) or ``single-reading``.
    Returns:
        A ``TrainingResult`` (``model`` holds the registered fitted pipeline).
    Raises:
        ValueError: the data cannot train a classifier (one class, one patient), or an
            unknown feature set.
        MlflowException: the tracking store failed.
    """
    import mlflow
    import mlflow.data

    from bp_core.model.registry import CHALLENGER, client_for, set_alias, set_version_tags

    if feature_set not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {feature_set!r} (one of {', '.join(FEATURE_SETS)})")
    other_set = next(name for name in FEATURE_SETS if name != feature_set)
    started = time.monotonic()
    frame = _load(Path(data_path))
    fits = fit_both(frame, settings, seed=seed, C=C)
    outcome, other = fits.outcome(feature_set), fits.outcome(other_set)
    false_alarms = {
        "equal_recall": fits.false_alarms["recall"],
        "false_alarms_at_equal_recall_single_reading": fits.false_alarms["reference_false_alarms"],
        "false_alarms_at_equal_recall_context": fits.false_alarms["candidate_false_alarms"],
    }

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    client = client_for(settings.mlflow_tracking_uri)
    experiment_id = ensure_experiment(client, settings)
    dataset = _dataset_input(frame, Path(data_path))
    manifest_tags = _manifest_tags(Path(data_path))
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"logreg-{feature_set}-seed{seed}-C{C:g}") as run:
        mlflow.log_input(dataset, context="training")
        mlflow.log_params({
            "features": ",".join(outcome.feature_names),
            "feature_set": feature_set,
            "n_features": len(outcome.feature_names),
            f"{_prefix(other_set)}features": ",".join(other.feature_names),
            "model": "StandardScaler+LogisticRegression",
            "C": C,
            "class_weight": str(CLASS_WEIGHT),
            "max_iter": MAX_ITER,
            "seed": seed,
            "rows": len(frame),
            "train_rows": outcome.train_rows,
            "holdout_rows": outcome.holdout_rows,
            "holdout_patients": outcome.holdout_patients,
            "threshold": settings.model_threshold,
            "serialization": SERIALIZATION_FORMAT,
        })
        mlflow.set_tags({"dataset.digest": dataset.digest, "dataset.source": str(data_path), **manifest_tags})
        mlflow.log_metrics({**_finite(outcome.metrics), **_finite(other.metrics, _prefix(other_set)),
                            **_finite(outcome.rules_metrics, "rules_"),
                            **_finite(fits.rules_with_context_metrics, "rules_with_context_"),
                            **_finite(false_alarms), "context_seconds": fits.context_seconds})
        mlflow.log_figure(confusion_figure(outcome.y_holdout, outcome.p_holdout, settings.model_threshold),
                          "plots/confusion_matrix.png")
        mlflow.log_figure(calibration_figure(outcome.y_holdout, outcome.p_holdout), "plots/calibration.png")
        mlflow.log_figure(precision_recall_figure(outcome.y_holdout, {
            name: fits.outcome(name).p_holdout for name in FEATURE_SETS}), "plots/precision_recall.png")
        info = _log_model(outcome, "model", settings.model_name)
        _log_model(other, f"{_prefix(other_set)}model", None)
    version = str(info.registered_model_version)
    set_alias(client, settings.model_name, CHALLENGER, version)
    set_version_tags(client, settings.model_name, version, {
        "training.run_id": run.info.run_id,
        "training.rows": len(frame),
        "training.seed": seed,
        "training.dataset_digest": dataset.digest,
        "training.pr_auc": f"{outcome.metrics['pr_auc']:.6f}",
        f"training.{_prefix(other_set)}pr_auc": f"{other.metrics['pr_auc']:.6f}",
        "features": ",".join(outcome.feature_names),
        "feature_set": feature_set_name(outcome.feature_names),
        "dataset.scenario": manifest_tags.get("dataset.scenario", BASELINE_SCENARIO),
    })
    seconds = time.monotonic() - started
    log.info("trained %s version %s (%s features) on %d readings in %.1fs", settings.model_name, version, feature_set,
             len(frame), seconds)
    return TrainingResult(run_id=run.info.run_id, model_version=version, metrics=outcome.metrics,
                          rules_metrics=outcome.rules_metrics, rows=len(frame), seconds=seconds,
                          model=outcome.pipeline, feature_set=feature_set, other_metrics=other.metrics,
                          false_alarms=false_alarms)
