"""Train the anomaly classifier, track the run in MLflow, register it as 'challenger'.

Pipeline: ``StandardScaler`` -> ``LogisticRegression`` on ``bp_core.features`` of the
*measured* systolic/diastolic; target: ``label`` (the noise-free true values cross the
thresholds). The model therefore learns how far a noisy measurement must be from the
limits before the true pressure is likely abnormal, and gives a probability the rules
cannot.

Choices:
- The hold-out is made of *patients* never seen in training (``GroupShuffleSplit``):
  the consumer scores new patients, and readings of one patient are correlated.
- ``class_weight=None``: the consumer uses the probability itself (threshold 0.5 by
  default, logged in Elasticsearch) and training logs a calibration plot and the Brier
  score; re-weighting classes would inflate every probability. Recall on the rare
  classes comes from the features (hinges beyond the limits), not from re-weighting.
- Serialization ``skops`` (MLflow's default): a plain Pipeline of StandardScaler and
  LogisticRegression contains only types skops trusts by default, so it loads back with
  no ``skops_trusted_types`` and no pickle. ``--export`` also writes a joblib file for
  ``BP_MODEL_PATH`` (the original brief's ``bp_logreg.pkl``).
- The experiment gets an explicit artifact location under ``data_dir/mlflow/artifacts``
  when the tracking store is local, so artifacts never land in the working directory;
  against a tracking server the server's artifact store is used.

No Airflow imports here: DAG tasks call ``train_and_register``.
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

from bp_core.features import FEATURE_NAMES, feature_matrix
from bp_core.model.metrics import classification_metrics, confusion_counts
from bp_core.settings import Settings

log = logging.getLogger(__name__)

EXPERIMENT_NAME = "bp-anomaly"
HOLDOUT_FRACTION = 0.2
MAX_ITER = 1000
CLASS_WEIGHT: str | None = None
SERIALIZATION_FORMAT = "skops"


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


def frame_features(frame: pd.DataFrame) -> np.ndarray:
    """The feature matrix of a readings frame (measured values)."""
    return feature_matrix(frame["systolic_mm_hg"].to_numpy(np.float64), frame["diastolic_mm_hg"].to_numpy(np.float64))


def model_scores(estimator, frame: pd.DataFrame) -> np.ndarray:
    """P(anomaly) for every reading of a frame: the serving fast path, column 1."""
    return estimator.predict_proba(frame_features(frame))[:, 1]


def rules_scores(frame: pd.DataFrame, settings: Settings) -> np.ndarray:
    """The clinical thresholds' flags as a 0/1 float score (the rules-only baseline)."""
    from bp_core.rules import Thresholds, rule_anomaly_mask

    mask = rule_anomaly_mask(frame["systolic_mm_hg"].to_numpy(np.float64), frame["diastolic_mm_hg"].to_numpy(np.float64),
                             Thresholds.from_settings(settings))
    return np.asarray(mask, dtype=np.float64)


def evaluate(scores: np.ndarray, frame: pd.DataFrame, threshold: float) -> dict[str, float]:
    """``classification_metrics`` of scores against a frame's labels and categories."""
    return classification_metrics(frame["label"].to_numpy(), scores, threshold=threshold,
                                  true_category=frame["true_category"].to_numpy())


def split_by_patient(frame: pd.DataFrame, *, seed: int,
                     holdout_fraction: float = HOLDOUT_FRACTION) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split readings into train and hold-out so no patient is in both.

    Args:
        frame: readings with a ``patient_id`` column.
        seed: random state of the split.
        holdout_fraction: share of *patients* held out.
    Returns:
        (train, holdout) frames.
    Raises:
        ValueError: fewer than two patients.
    """
    from sklearn.model_selection import GroupShuffleSplit

    groups = frame["patient_id"].to_numpy()
    if len(np.unique(groups)) < 2:
        raise ValueError("need at least two patients to hold some out")
    splitter = GroupShuffleSplit(n_splits=1, test_size=holdout_fraction, random_state=seed)
    train_idx, holdout_idx = next(splitter.split(np.zeros(len(frame)), groups=groups))
    return frame.iloc[train_idx], frame.iloc[holdout_idx]


def fit_and_evaluate(frame: pd.DataFrame, settings: Settings, *, seed: int = 0, C: float = 1.0) -> FitOutcome:
    """Split by patient, fit the pipeline, evaluate it and the rules on the hold-out.

    Args:
        frame: readings in the data-set contract (``bp_core.simulation.datasets``).
        settings: thresholds and ``model_threshold``.
        seed: split and solver random state.
        C: inverse regularisation strength.
    Returns:
        A ``FitOutcome``.
    Raises:
        ValueError: too few patients, or the training part holds a single class.
    """
    train, holdout = split_by_patient(frame, seed=seed)
    y_train = train["label"].to_numpy(np.int64)
    if len(np.unique(y_train)) < 2:
        raise ValueError("the training data holds a single class: cannot fit a classifier")
    pipeline = build_pipeline(C=C, seed=seed)
    pipeline.fit(frame_features(train), y_train)
    p_holdout = model_scores(pipeline, holdout)
    return FitOutcome(
        pipeline=pipeline,
        metrics=evaluate(p_holdout, holdout, settings.model_threshold),
        rules_metrics=evaluate(rules_scores(holdout, settings), holdout, 0.5),
        train_rows=len(train),
        holdout_rows=len(holdout),
        holdout_patients=int(holdout["patient_id"].nunique()),
        y_holdout=holdout["label"].to_numpy(np.int64),
        p_holdout=p_holdout,
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


# ---------------------------------------------------------------------------- MLflow


def ensure_experiment(client, settings: Settings) -> str:
    """The id of experiment ``bp-anomaly``, created when missing.

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

    experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
    if experiment is not None:
        return experiment.experiment_id
    artifact_location = None
    if not settings.mlflow_tracking_uri.startswith(("http://", "https://", "databricks")):
        artifacts = (Path(settings.data_dir) / "mlflow" / "artifacts").resolve()
        artifacts.mkdir(parents=True, exist_ok=True)
        artifact_location = artifacts.as_uri()
    try:
        return client.create_experiment(EXPERIMENT_NAME, artifact_location=artifact_location)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return client.get_experiment_by_name(EXPERIMENT_NAME).experiment_id  # created concurrently


def _load(data_path: Path) -> pd.DataFrame:
    from bp_core.simulation.datasets import load_dataset

    return load_dataset(data_path)


def _manifest_tags(data_path: Path) -> dict[str, str]:
    """The data set manifest's digest and seed as run tags; none for a bare parquet file."""
    from bp_core.simulation.datasets import read_manifest

    try:
        manifest = read_manifest(data_path)
    except FileNotFoundError:
        return {}
    return {f"dataset.manifest.{key}": str(manifest[key]) for key in ("sha256", "seed", "patients", "readings")
            if key in manifest}


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


def train_and_register(settings: Settings, data_path: Path, *, seed: int = 0, C: float = 1.0) -> TrainingResult:
    """Train on a data set, log the run in MLflow, register the model as 'challenger'.

    Logs params (features, C, class_weight, seed, rows, threshold...), the hold-out
    metrics of the model and of the rules alone (``rules_`` prefix), the data set as a
    run input (with its digest), a confusion-matrix and a calibration PNG, and the model
    (``name='model'``, registered as ``settings.model_name``, skops serialization, tensor
    signature over ``FEATURE_NAMES``). The new version gets alias ``challenger`` and
    tags with its training figures.

    Args:
        settings: tracking URI, model name, thresholds, data folder.
        data_path: the data set (folder or parquet file, see ``bp_core.simulation.datasets``).
        seed: split and solver random state.
        C: inverse regularisation strength.
    Returns:
        A ``TrainingResult`` (``model`` holds the fitted pipeline).
    Raises:
        ValueError: the data cannot train a classifier (one class, one patient).
        MlflowException: the tracking store failed.
    """
    import mlflow
    import mlflow.data
    import mlflow.sklearn
    from mlflow.models import infer_signature

    from bp_core.model.registry import CHALLENGER, client_for, set_alias, set_version_tags

    started = time.monotonic()
    frame = _load(Path(data_path))
    outcome = fit_and_evaluate(frame, settings, seed=seed, C=C)

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    client = client_for(settings.mlflow_tracking_uri)
    experiment_id = ensure_experiment(client, settings)
    dataset = _dataset_input(frame, Path(data_path))
    example = feature_matrix(np.array([120.0, 185.0, 85.0]), np.array([80.0, 125.0, 55.0]))
    signature = infer_signature(example, outcome.pipeline.predict_proba(example))
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"logreg-seed{seed}-C{C:g}") as run:
        mlflow.log_input(dataset, context="training")
        mlflow.log_params({
            "features": ",".join(FEATURE_NAMES),
            "n_features": len(FEATURE_NAMES),
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
        mlflow.set_tags({"dataset.digest": dataset.digest, "dataset.source": str(data_path),
                         **_manifest_tags(Path(data_path))})
        mlflow.log_metrics({**_finite(outcome.metrics), **_finite(outcome.rules_metrics, "rules_")})
        mlflow.log_figure(confusion_figure(outcome.y_holdout, outcome.p_holdout, settings.model_threshold),
                          "plots/confusion_matrix.png")
        mlflow.log_figure(calibration_figure(outcome.y_holdout, outcome.p_holdout), "plots/calibration.png")
        info = mlflow.sklearn.log_model(
            outcome.pipeline,
            name="model",
            registered_model_name=settings.model_name,
            signature=signature,
            input_example=example,
            serialization_format=SERIALIZATION_FORMAT,
            pip_requirements=_pip_requirements(),
            pyfunc_predict_fn="predict_proba",
        )
    version = str(info.registered_model_version)
    set_alias(client, settings.model_name, CHALLENGER, version)
    set_version_tags(client, settings.model_name, version, {
        "training.run_id": run.info.run_id,
        "training.rows": len(frame),
        "training.seed": seed,
        "training.dataset_digest": dataset.digest,
        "training.pr_auc": f"{outcome.metrics['pr_auc']:.6f}",
        "features": ",".join(FEATURE_NAMES),
    })
    seconds = time.monotonic() - started
    log.info("trained %s version %s on %d readings in %.1fs", settings.model_name, version, len(frame), seconds)
    return TrainingResult(run_id=run.info.run_id, model_version=version, metrics=outcome.metrics,
                          rules_metrics=outcome.rules_metrics, rows=len(frame), seconds=seconds,
                          model=outcome.pipeline)
