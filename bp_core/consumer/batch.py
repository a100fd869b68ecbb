"""One polled batch, from Kafka records to what each sink must store: pure, no I/O.

``route_records`` is the consumer's hot path, per batch: parse every message (the
common form in one pass, anything else through the full validator), score the valid
readings together (``bp_core.scoring.score_readings``: rules, categories, one model call), and sort the
outcome into the three sinks' shares: anomaly documents for Elasticsearch, archive
records for the normal readings (by partition, with their Kafka position), and
rejected messages with their reason for the dead-letter topic.

It is written for speed, since it runs once per message: columns rather than objects,
no function call per message beyond the parser, documents built straight into the
structs the sinks encode in one C call per batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable

from bp_core.consumer.documents import AnomalyDocument, ArchiveRecord, KafkaPosition, SourcePosition
from bp_core.fhir.parse import parse_common_form, parse_payload_generic
from bp_core.reading import Reading
from bp_core.rules import Thresholds
from bp_core.scoring import DETECTED_BY, ScoredBatch, score_readings

EMPTY_MESSAGE = "empty message (null value)"


@dataclass(slots=True)
class BatchOutcome:
    """What one batch gives each sink. ``record`` is the Kafka record a value came from."""

    messages: int = 0
    readings: int = 0
    anomaly_documents: list[AnomalyDocument] = field(default_factory=list)
    anomaly_records: list = field(default_factory=list)           # their source records
    normals: dict[int, list[tuple[tuple[int, int], ArchiveRecord]]] = field(default_factory=dict)
    rejects: list[tuple[object, str]] = field(default_factory=list)  # (record, reason)
    layers: dict[str, int] = field(default_factory=dict)           # anomalies by detecting layer(s)

    @property
    def anomaly_ids(self) -> list[str]:
        """The anomalies' Observation ids, in order (their Elasticsearch ``_id``s)."""
        return [document.observation_id for document in self.anomaly_documents]

    @property
    def anomalies(self) -> int:
        return len(self.anomaly_documents)

    @property
    def normal_count(self) -> int:
        return sum(len(lines) for lines in self.normals.values())


def route_records(records: Iterable, thresholds: Thresholds, model, model_threshold: float,
                  now: datetime) -> BatchOutcome:
    """Parse, score and route a batch of Kafka records (anything with ``topic``,
    ``partition``, ``offset``, ``key`` and ``value``).

    Args:
        records: the batch, in the order its sinks should see it.
        thresholds: the clinical anomaly thresholds.
        model: the served model (``bp_core.model.serving.ServedModel``) or None.
        model_threshold: probability at or above which the model flags an anomaly.
        now: the batch's ``ingested_at`` / ``archived_at`` time.
    Returns:
        The batch's share for each sink. A message that holds several Observations (a
        Bundle, NDJSON) goes to the dead-letter topic whole if any of them is rejected,
        and its valid readings are routed as well (``kafka.entry`` tells them apart).
    """
    outcome = BatchOutcome()
    readings: list[Reading] = []
    sources: list[tuple] = []  # per reading: (record, entry index inside its message)
    rejects = outcome.rejects
    messages = 0
    for record in records:
        messages += 1
        value = record.value
        if value is None:
            rejects.append((record, EMPTY_MESSAGE))
            continue
        reading = parse_common_form(value)
        if reading is not None:
            readings.append(reading)
            sources.append((record, 0))
            continue
        reasons = None
        for entry, result in enumerate(parse_payload_generic(value)):
            if type(result) is Reading:
                readings.append(result)
                sources.append((record, entry))
            else:
                reasons = reasons or []
                reasons.append(f"{result.observation_id}: {result.reason}" if result.observation_id else result.reason)
        if reasons:
            rejects.append((record, "; ".join(reasons)))
    outcome.messages = messages
    outcome.readings = len(readings)

    scored = score_readings(readings, thresholds, model, model_threshold)
    _sort_into_sinks(outcome, scored, sources, model, now)
    outcome.layers = scored.layer_counts()
    return outcome


def _sort_into_sinks(outcome: BatchOutcome, scored: ScoredBatch, sources: list[tuple], model,
                     now: datetime) -> None:
    model_name, model_version = (model.name, model.version) if model is not None else (None, None)
    records, documents, normals = outcome.anomaly_records, outcome.anomaly_documents, outcome.normals
    for reading, (record, entry), category, rule_hit, model_hit, probability, types in zip(
            scored.readings, sources, scored.categories, scored.rule_anomaly, scored.model_anomaly,
            scored.model_probability, scored.anomaly_types):
        if rule_hit or model_hit:
            records.append(record)
            documents.append(AnomalyDocument(
                reading.effective, reading.observation_id, reading.patient_id, reading.systolic_mm_hg,
                reading.diastolic_mm_hg, category, types, rule_hit, model_hit, probability, model_name,
                model_version, DETECTED_BY[rule_hit + 2 * model_hit], now, reading.status,
                SourcePosition(record.topic, record.partition, record.offset)))
        else:
            partition, offset = record.partition, record.offset
            lines = normals.get(partition)
            if lines is None:
                lines = normals[partition] = []
            lines.append(((offset, entry), ArchiveRecord(
                reading.observation_id, reading.patient_id, reading.effective, reading.systolic_mm_hg,
                reading.diastolic_mm_hg, category, probability, model_name, model_version, now,
                KafkaPosition(partition, offset, entry))))
