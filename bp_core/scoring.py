"""The one scoring path: clinical rules, AHA category and the served model, per batch.

The consumer scores every batch with ``score_readings`` and ``bp classify`` every file,
so both give the same answer. A reading is an anomaly when the rules flag it, or when
the model's probability reaches ``model_threshold``; ``detected_by`` says which layer(s)
did. The category is a separate field and never decides the routing by itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from bp_core.features import model_matrix
from bp_core.reading import Reading
from bp_core.rules import ANOMALY_TYPE_SETS, Thresholds, anomaly_type_codes, category_codes

RULES, MODEL = "rules", "model"
# detected_by, indexed by rule_anomaly + 2 * model_anomaly
DETECTED_BY: tuple[tuple[str, ...], ...] = ((), (RULES,), (MODEL,), (RULES, MODEL))


@dataclass(slots=True)
class ScoredBatch:
    """The scores of a batch, one entry per reading in every column."""

    readings: Sequence[Reading]
    categories: list[str]
    rule_anomaly: list[bool]
    model_anomaly: list[bool]
    model_probability: list[float | None]
    anomaly_types: list[tuple[str, ...]]
    systolic: np.ndarray                # the values scored, as the model saw them
    diastolic: np.ndarray
    context: object = None              # their ``bp_core.context.ContextColumns``, or None

    def __len__(self) -> int:
        return len(self.readings)

    def layer_counts(self) -> dict[str, int]:
        """Anomalies by the layers that flagged them: ``rules``, ``model``, ``rules+model``."""
        if not self.readings:
            return {}
        codes = np.asarray(self.rule_anomaly, dtype=np.intp) + 2 * np.asarray(self.model_anomaly, dtype=np.intp)
        detected = np.bincount(codes, minlength=len(DETECTED_BY))
        return {"+".join(DETECTED_BY[code]): int(count) for code, count in enumerate(detected.tolist()) if code and count}


def score_readings(readings: Sequence[Reading], thresholds: Thresholds, model=None,
                   model_threshold: float = 0.5, context=None) -> ScoredBatch:
    """Apply the rules and (when given) the model to a whole batch in vectorised calls.

    Args:
        readings: the valid readings of the batch.
        thresholds: the clinical anomaly thresholds (and the baseline deltas).
        model: a ``bp_core.model.serving.ServedModel`` or None (rules-only mode).
        model_threshold: probability at or above which the model flags an anomaly.
        context: the readings' ``bp_core.context.ContextColumns`` (their patients'
            history), or None: no context anomalies, and a context model sees none.
    Returns:
        The batch's columns, in the order of ``readings``.
    """
    n = len(readings)
    systolic = np.fromiter([r.systolic_mm_hg for r in readings], dtype=np.float64, count=n)
    diastolic = np.fromiter([r.diastolic_mm_hg for r in readings], dtype=np.float64, count=n)
    if context is None:
        type_codes = anomaly_type_codes(systolic, diastolic, thresholds)
    else:
        type_codes = anomaly_type_codes(systolic, diastolic, thresholds, context.baseline_systolic,
                                        context.baseline_diastolic)
    if model is not None and n:
        probabilities = model_probabilities(model, systolic, diastolic, context)
        model_anomaly = (probabilities >= model_threshold).tolist()
        probability_list = probabilities.tolist()
    else:
        model_anomaly = [False] * n
        probability_list = [None] * n
    return ScoredBatch(
        readings=readings,
        categories=category_codes(systolic, diastolic).tolist(),
        rule_anomaly=(type_codes != 0).tolist(),
        model_anomaly=model_anomaly,
        model_probability=probability_list,
        anomaly_types=[ANOMALY_TYPE_SETS[code] for code in type_codes.tolist()],
        systolic=systolic,
        diastolic=diastolic,
        context=context,
    )


def model_probabilities(model, systolic: np.ndarray, diastolic: np.ndarray, context=None) -> np.ndarray:
    """P(anomaly) of each reading from ``model``, on the features it expects."""
    features = model_matrix(systolic, diastolic, context, model.feature_names)
    return np.asarray(model.predict_proba(features), dtype=np.float64)
