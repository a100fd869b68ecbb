"""Scoring and routing of a batch of readings: pure, vectorised, no I/O.

A reading is an anomaly when the clinical thresholds flag it, or when the model's
probability reaches ``model_threshold``; ``detected_by`` says which layer(s) did.
The AHA category is a separate field and never decides the routing by itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from bp_core.features import feature_matrix
from bp_core.reading import Reading
from bp_core.rules import Thresholds, anomaly_types, category_codes, rule_anomaly_mask


@dataclass(slots=True)
class RoutedReading:
    """A reading with everything the sinks need to know about it."""

    reading: Reading
    category: str
    rule_anomaly: bool
    anomaly_types: list[str]
    model_probability: float | None
    model_anomaly: bool

    @property
    def is_anomaly(self) -> bool:
        return self.rule_anomaly or self.model_anomaly

    @property
    def detected_by(self) -> list[str]:
        return [layer for layer, hit in (("rules", self.rule_anomaly), ("model", self.model_anomaly)) if hit]


def route_batch(readings: Sequence[Reading], thresholds: Thresholds, model=None,
                model_threshold: float = 0.5) -> list[RoutedReading]:
    """Apply the rules and (when given) the model to a whole batch in vectorised calls.

    Args:
        readings: the valid readings of the batch.
        thresholds: the clinical anomaly thresholds.
        model: a ``bp_core.model.serving.ServedModel`` or None (rules-only mode).
        model_threshold: probability at or above which the model flags an anomaly.
    Returns:
        One ``RoutedReading`` per input reading, in order.
    """
    if not readings:
        return []
    systolic = np.fromiter((r.systolic_mm_hg for r in readings), dtype=np.float64, count=len(readings))
    diastolic = np.fromiter((r.diastolic_mm_hg for r in readings), dtype=np.float64, count=len(readings))
    rule_mask = rule_anomaly_mask(systolic, diastolic, thresholds)
    categories = category_codes(systolic, diastolic)
    if model is not None:
        probabilities = np.asarray(model.predict_proba(feature_matrix(systolic, diastolic)), dtype=np.float64)
        model_mask = probabilities >= model_threshold
        probability_list = probabilities.tolist()
    else:
        model_mask = np.zeros(len(readings), dtype=bool)
        probability_list = [None] * len(readings)
    routed = []
    for i, reading in enumerate(readings):
        rule_hit = bool(rule_mask[i])
        routed.append(RoutedReading(
            reading=reading,
            category=str(categories[i]),
            rule_anomaly=rule_hit,
            anomaly_types=anomaly_types(reading.systolic_mm_hg, reading.diastolic_mm_hg, thresholds) if rule_hit else [],
            model_probability=probability_list[i],
            model_anomaly=bool(model_mask[i]),
        ))
    return routed


def anomaly_document(item: RoutedReading, *, model_name: str | None, model_version: str | None,
                     ingested_at: str, topic: str, partition: int, offset: int) -> dict:
    """The Elasticsearch document of an anomalous reading (no patient names, ever)."""
    reading = item.reading
    return {
        "@timestamp": reading.effective.isoformat(),
        "observation_id": reading.observation_id,
        "patient_id": reading.patient_id,
        "systolic": reading.systolic_mm_hg,
        "diastolic": reading.diastolic_mm_hg,
        "category": item.category,
        "anomaly_types": item.anomaly_types,
        "rule_anomaly": item.rule_anomaly,
        "model_anomaly": item.model_anomaly,
        "model_probability": item.model_probability,
        "model_name": model_name,
        "model_version": model_version,
        "detected_by": item.detected_by,
        "ingested_at": ingested_at,
        "status": reading.status,
        "source": {"topic": topic, "partition": partition, "offset": offset},
    }


def archive_record(item: RoutedReading, *, model_name: str | None, model_version: str | None,
                   archived_at: str) -> dict:
    """The archive line of a normal reading (its Kafka position is added by the sink)."""
    reading = item.reading
    return {
        "observation_id": reading.observation_id,
        "patient_id": reading.patient_id,
        "effective": reading.effective.isoformat(),
        "systolic": reading.systolic_mm_hg,
        "diastolic": reading.diastolic_mm_hg,
        "category": item.category,
        "model_probability": item.model_probability,
        "model_name": model_name,
        "model_version": model_version,
        "archived_at": archived_at,
    }
