"""The reference side of a drift check: the champion and the data set it was trained on.

``load_champion`` follows the registry alias (``settings.model_alias``) to the version,
its training run (``dataset.source`` and ``dataset.digest`` tags, ``features`` param)
and its model; ``build_references`` turns the training data into ``Reference`` samples,
overall and per fleet when the data set names its devices (``device_model`` column).

``model_inputs`` and ``feature_columns`` are the one bridge between stored fields and
the champion's features: the features ``bp_core.features.model_matrix`` makes from
systolic and diastolic and, for a context model, from the patient's context as the
consumer stored it (``CONTEXT_FIELDS``; on the reference side, computed from the data
set's history as training does); any other feature name is read as a stored field of
that name, so the check follows the champion's feature list.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from bp_core.drift.statistics import ALERT_RATE, PROBABILITY, Reference, Sample, spreads_by_patient
from bp_core.errors import CannotCompare
from bp_core.features import CONTEXT_MODEL_FEATURES, FEATURE_NAMES, LIMIT_FEATURE_NAMES, model_matrix, uses_context
from bp_core.settings import Settings

UNKNOWN_FLEET = "unknown"
# A fleet is compared with its own training readings only when they are this many, from
# this many patients; otherwise with the whole training data.
MIN_FLEET_REFERENCE_READINGS = 2_000
MIN_FLEET_REFERENCE_PATIENTS = 200
# The context a context model's features are made from, as the sinks store it
# (``bp_core.consumer.documents``; null where there is none).
CONTEXT_FIELDS: tuple[str, ...] = ("baseline_systolic", "baseline_diastolic", "arv_systolic")
# Not compared: features of a patient's history rather than of the world. Whether a
# reading has a baseline, how far it is from it and how much the patient's readings vary
# from one to the next depend on how much history each patient has and on where in it the
# window falls (a training data set holds each patient's first readings; a stream that has
# run for weeks has a full 7-day window for nearly every reading) and on the reading
# cadence. A stationary stream of the training data's own world scores 0.23 on
# has_baseline and 1.4-2.1 times the threshold on the deviations (docs/drift.md).
NOT_COMPARED: tuple[str, ...] = ("has_baseline", "systolic_minus_baseline_mm_hg", "diastolic_minus_baseline_mm_hg",
                                 "arv_systolic_mm_hg")
# Compared over the readings that have a baseline: without one the model sees stand-ins
# (the reading itself), as many as the patients' history is short.
NEED_BASELINE: tuple[str, ...] = (*(f"baseline_{name}" for name in LIMIT_FEATURE_NAMES),
                                  *(f"midpoint_{name}" for name in LIMIT_FEATURE_NAMES))


@dataclass(frozen=True)
class StoredContext:
    """``CONTEXT_FIELDS`` per reading (NaN where absent): what
    ``bp_core.features.context_feature_matrix`` reads of a ``ContextColumns``."""

    baseline_systolic: np.ndarray
    baseline_diastolic: np.ndarray
    arv_systolic: np.ndarray


@dataclass(frozen=True)
class Champion:
    """The served model and where its training data is."""

    name: str
    version: str
    run_id: str
    features: list[str]
    dataset_source: Path
    dataset_digest: str | None
    dataset_sha256: str | None           # the data set manifest's sha256, when it had one
    predict_proba: Callable[[np.ndarray], np.ndarray] | None = None  # set by load_model


def load_champion(settings: Settings) -> Champion:
    """The version behind ``settings.model_alias`` and its training run's data set.

    Raises:
        CannotCompare: no champion yet, or its run recorded no data set.
        MlflowException: the tracking store failed.
    """
    from bp_core.model.registry import client_for, get_alias_version

    client = client_for(settings.mlflow_tracking_uri)
    version = get_alias_version(client, settings.model_name, settings.model_alias)
    if version is None:
        raise CannotCompare(f"no {settings.model_alias} for {settings.model_name} yet: nothing to compare with")
    model_version = client.get_model_version(settings.model_name, version)
    run = client.get_run(model_version.run_id)
    source = run.data.tags.get("dataset.source")
    if not source:
        raise CannotCompare(f"{settings.model_name} v{version}: its run {model_version.run_id} recorded no data set")
    features = [name for name in run.data.params.get("features", ",".join(FEATURE_NAMES)).split(",") if name]
    return Champion(name=settings.model_name, version=str(version), run_id=model_version.run_id, features=features,
                    dataset_source=Path(source), dataset_digest=run.data.tags.get("dataset.digest"),
                    dataset_sha256=run.data.tags.get("dataset.manifest.sha256"))


def with_model(settings: Settings, champion: Champion) -> Champion:
    """The champion with its model loaded (cached by version, as the consumer does).

    Raises:
        MlflowException: the download failed.
    """
    from dataclasses import replace

    from bp_core.model.registry import load_version, model_cache_dir
    from bp_core.model.serving import served

    estimator = load_version(settings.mlflow_tracking_uri, champion.name, champion.version, model_cache_dir(settings))
    return replace(champion, predict_proba=served(champion.name, champion.version, estimator).predict_proba)


def check_dataset(champion: Champion) -> Path:
    """The champion's data set file, as it was at training time.

    Raises:
        CannotCompare: it is missing, or its content changed since (manifest sha256).
    """
    from bp_core.simulation.datasets import READINGS_FILE, read_manifest

    source = champion.dataset_source
    parquet = source / READINGS_FILE if source.is_dir() else source
    if not parquet.is_file():
        raise CannotCompare(f"reference data missing: {parquet} (training data of {champion.name} v{champion.version})")
    if champion.dataset_sha256:
        try:
            current = read_manifest(source).get("sha256")
        except (FileNotFoundError, ValueError):
            current = None
        if current and current != champion.dataset_sha256:
            raise CannotCompare(f"reference data changed: {source} is no longer what {champion.name} "
                                f"v{champion.version} was trained on (sha256 {current[:12]} != {champion.dataset_sha256[:12]})")
    return parquet


# --------------------------------------------------------------------------- features


def input_fields(features: list[str]) -> list[str]:
    """The stored fields (sink names) the features are computed from."""
    context = list(CONTEXT_FIELDS) if uses_context(features) else []
    return ["systolic", "diastolic", *context, *[name for name in features if name not in CONTEXT_MODEL_FEATURES]]


def feature_columns(features: list[str], inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each named feature, one value per row, from the stored input fields."""
    made_here = [name for name in features if name in CONTEXT_MODEL_FEATURES]
    context = StoredContext(*(np.asarray(inputs[name], dtype=np.float64) for name in CONTEXT_FIELDS)) \
        if uses_context(made_here) else None
    matrix = model_matrix(inputs["systolic"], inputs["diastolic"], context, made_here or FEATURE_NAMES)
    made = {name: matrix[:, i] for i, name in enumerate(made_here)}
    return {name: made[name] if name in made else np.asarray(inputs[name], dtype=np.float64) for name in features}


def compared_features(features: list[str]) -> list[str]:
    """The champion's features the check compares (all but ``NOT_COMPARED``)."""
    return [name for name in features if name not in NOT_COMPARED]


def compared_columns(columns: dict[str, np.ndarray], inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The feature columns as compared: the ``NEED_BASELINE`` features are unknown (NaN)
    where the reading has no baseline."""
    if "baseline_systolic" not in inputs:
        return columns
    missing = ~np.isfinite(np.asarray(inputs["baseline_systolic"], dtype=np.float64))
    return {name: np.where(missing, np.nan, values) if name in NEED_BASELINE else values
            for name, values in columns.items()}


def model_inputs(features: list[str], columns: dict[str, np.ndarray]) -> np.ndarray:
    """The champion's input matrix (its feature order) from ``feature_columns``."""
    return np.column_stack([columns[name] for name in features])


def probabilities(champion: Champion, columns: dict[str, np.ndarray]) -> np.ndarray:
    """P(anomaly) per row; NaN where an input is unknown (a null context field)."""
    matrix = model_inputs(champion.features, columns)
    out = np.full(len(matrix), np.nan)
    complete = np.isfinite(matrix).all(axis=1)
    if complete.any():
        out[complete] = champion.predict_proba(matrix[complete])
    return out


# --------------------------------------------------------------------------- reference


def build_references(frame, champion: Champion, settings: Settings) -> tuple[Reference, dict[str, Reference]]:
    """The training data as the overall ``Reference`` and one per fleet with enough readings.

    Alerts are what the consumer would have routed: the rules (with the baseline's, when
    the patient context is on), or the champion's probability at ``settings.model_threshold``.

    Raises:
        CannotCompare: the data set lacks a column a feature needs.
    """
    import pandas as pd

    from bp_core.rules import Thresholds, rule_anomaly_mask

    inputs = {"systolic": frame["systolic_mm_hg"].to_numpy(np.float64),
              "diastolic": frame["diastolic_mm_hg"].to_numpy(np.float64)}
    context = None
    if uses_context(champion.features) or settings.patient_context:  # the patients' history, as training computes it
        from bp_core.context import context_of_frame

        context = context_of_frame(frame)
        if uses_context(champion.features):
            inputs.update({name: getattr(context, name) for name in CONTEXT_FIELDS})
    for name in input_fields(champion.features)[len(inputs):]:
        if name not in frame.columns:
            raise CannotCompare(f"the reference data set has no column {name!r}, a feature of "
                                f"{champion.name} v{champion.version}")
        inputs[name] = frame[name].to_numpy(np.float64)
    columns = feature_columns(champion.features, inputs)
    columns[PROBABILITY] = probabilities(champion, columns)
    columns = compared_columns(columns, inputs)
    baselines = (context.baseline_systolic, context.baseline_diastolic) if settings.patient_context else (None, None)
    alerts = (rule_anomaly_mask(inputs["systolic"], inputs["diastolic"], Thresholds.from_settings(settings), *baselines)
              | (columns[PROBABILITY] >= settings.model_threshold)).astype(np.float64)
    patient_codes, patient_ids = pd.factorize(frame["patient_id"])
    overall = _reference(columns, alerts, patient_codes)
    fleets: dict[str, Reference] = {}
    if "device_model" in frame.columns:
        fleet_names = frame["device_model"].fillna(UNKNOWN_FLEET).to_numpy(dtype=object)
        for fleet in np.unique(fleet_names):
            mask = fleet_names == fleet
            if mask.sum() >= MIN_FLEET_REFERENCE_READINGS and len(np.unique(patient_codes[mask])) >= MIN_FLEET_REFERENCE_PATIENTS:
                fleets[str(fleet)] = _reference({k: v[mask] for k, v in columns.items()}, alerts[mask],
                                                pd.factorize(patient_codes[mask])[0])
    return overall, fleets


def _reference(columns: dict[str, np.ndarray], alerts: np.ndarray, patient_codes: np.ndarray) -> Reference:
    spreads = {}
    for name, values in columns.items():
        known = np.isfinite(values)
        spreads[name] = spreads_by_patient(values[known], patient_codes[known])
    spreads[ALERT_RATE] = spreads_by_patient(alerts, patient_codes)
    sample = Sample(columns, np.ones(len(alerts)), alerts, int(patient_codes.max()) + 1 if len(patient_codes) else 0)
    return Reference(sample, spreads)
