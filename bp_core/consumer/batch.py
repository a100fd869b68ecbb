"""One polled batch, from Kafka records to what each sink must store (no I/O but the
patient state's restore).

``BatchRouter.route`` is the consumer's hot path, per batch: parse every message (the
common form in one pass, anything else through the full validator), refuse readings
dated in the future, apply every reading to its patient's state (``PatientContext``:
context columns, status changes, changelog records), set retractions apart, score the
other readings together (``bp_core.scoring``), and sort the outcome into the sinks'
shares: anomaly documents for Elasticsearch (``_id`` = the reading key) and their
RiskAssessments for the alerts topic, a Flag per sustained-hypertension change, archive
records for the normal readings (by partition, with their Kafka position), rejected
messages with their reason for the dead-letter topic, and the corrections (retractions,
amendments) whose earlier reading the writer looks up.

Written for speed, since it runs once per message: columns rather than objects, no
function call per message beyond the parser, documents built straight into the structs
the sinks encode in one C call per batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable

import numpy as np

from bp_core.consumer.documents import AnomalyDocument, ArchiveRecord, KafkaPosition, SourcePosition
from bp_core.consumer.state import REMOVED
from bp_core.fhir import alerts
from bp_core.fhir.ids import reading_key
from bp_core.fhir.parse import parse_common_form, parse_payload_generic
from bp_core.reading import Reading, future_reason
from bp_core.rules import Thresholds
from bp_core.scoring import DETECTED_BY, ScoredBatch, score_readings

EMPTY_MESSAGE = "empty message (null value)"


@dataclass(slots=True)
class Correction:
    """A reading that withdraws (``entered-in-error``) or replaces (``amended``,
    ``corrected``) an earlier one with the same key; ``routed`` is what the new one became
    (None for a retraction), ``held`` whether the patient state held the earlier one."""

    key: str
    reading: Reading
    record: object          # its Kafka record
    entry: int              # its index inside the message
    routed: str | None      # 'anomaly', 'normal' or None
    held: bool = False


@dataclass(slots=True)
class BatchOutcome:
    """What one batch gives each sink. ``record`` is the Kafka record a value came from."""

    messages: int = 0
    readings: int = 0
    anomaly_keys: list[str] = field(default_factory=list)          # their Elasticsearch _ids
    anomaly_documents: list[AnomalyDocument] = field(default_factory=list)
    anomaly_records: list = field(default_factory=list)            # their source records
    normals: dict[int, list[tuple[tuple[int, int], ArchiveRecord]]] = field(default_factory=dict)
    rejects: list[tuple[object, str]] = field(default_factory=list)  # (record, reason)
    layers: dict[str, int] = field(default_factory=dict)            # anomalies by detecting layer(s)
    alerts: list[alerts.FhirMessage] = field(default_factory=list)   # RiskAssessments, Devices
    corrections: list[Correction] = field(default_factory=list)
    normal_keys: set[str] = field(default_factory=set)
    model: tuple[str | None, str | None] = (None, None)              # who scored the anomalies
    scored: ScoredBatch | None = None
    status_changes: list = field(default_factory=list)              # bp_core.context.StatusChange
    changelog: list[tuple[int, bytes, bytes | None]] = field(default_factory=list)

    @property
    def anomalies(self) -> int:
        return len(self.anomaly_documents)

    @property
    def normal_count(self) -> int:
        return sum(len(lines) for lines in self.normals.values())


def parse_records(records: Iterable, now: datetime) -> tuple[int, list[Reading], list[tuple], list[tuple]]:
    """Parse a batch: (messages, readings, their (record, entry) sources, rejects).

    A message that holds several Observations (a Bundle, NDJSON) goes to the dead-letter
    topic whole if any of them is rejected, and its valid readings are routed as well
    (``kafka.entry`` tells them apart). A reading dated more than 24 h after ``now`` is
    rejected as in the future.
    """
    readings: list[Reading] = []
    sources: list[tuple] = []
    rejects: list[tuple] = []
    messages = 0
    for record in records:
        messages += 1
        value = record.value
        if value is None:
            rejects.append((record, EMPTY_MESSAGE))
            continue
        reading = parse_common_form(value)
        if reading is not None:
            late = future_reason(reading, now)
            if late is None:
                readings.append(reading)
                sources.append((record, 0))
            else:
                rejects.append((record, f"{reading.observation_id}: {late}"))
            continue
        reasons = None
        for entry, result in enumerate(parse_payload_generic(value)):
            reason = future_reason(result, now) if type(result) is Reading else result.reason
            if reason is None:
                readings.append(result)
                sources.append((record, entry))
            else:
                reasons = reasons or []
                reasons.append(f"{result.observation_id}: {reason}" if result.observation_id else reason)
        if reasons:
            rejects.append((record, "; ".join(reasons)))
    return messages, readings, sources, rejects


class BatchRouter:
    """Routes batches for one consumer: its thresholds, and who assessed (cached Devices)."""

    def __init__(self, thresholds: Thresholds, model_threshold: float, *, alerts_topic: str | None = None,
                 baseline_deltas: tuple[float, float] | None = None) -> None:
        self.thresholds = thresholds
        self.model_threshold = model_threshold
        self.alerts_topic = alerts_topic     # None: no alerts
        self.alerts_on = bool(alerts_topic)
        self._rules = alerts.rules_assessor(thresholds, baseline_systolic_delta=baseline_deltas and baseline_deltas[0],
                                            baseline_diastolic_delta=baseline_deltas and baseline_deltas[1])
        self._models: dict[tuple[str, str], alerts.Assessor] = {}
        self._published: set[str] = set()   # Device ids sent by this process (a restart sends them again)

    def assessor(self, model) -> alerts.Assessor:
        """Who assesses with ``model`` (None: the rules alone)."""
        if model is None:
            return self._rules
        assessor = self._models.get((model.name, model.version))
        if assessor is None:
            assessor = self._models[model.name, model.version] = alerts.model_assessor(model.name, model.version)
        return assessor

    def assessor_of(self, model_name: str | None, model_version: str | None) -> alerts.Assessor:
        """Who assessed a stored anomaly (its document's model name and version)."""
        if model_name is None or model_version is None:
            return self._rules
        return self.assessor(_Named(model_name, model_version))

    def route(self, records: Iterable, model, now: datetime, context=None) -> BatchOutcome:
        """Parse, score and route a batch of Kafka records (anything with ``topic``,
        ``partition``, ``offset``, ``key`` and ``value``), in the order its sinks see it.

        Args:
            records: the batch.
            model: the served model (``bp_core.model.serving.ServedModel``) or None.
            now: the batch's consumption time (``ingested_at``, ``archived_at``).
            context: the ``bp_core.consumer.state.PatientContext`` of the partitions, or
                None (each reading judged alone).
        """
        outcome = BatchOutcome()
        outcome.messages, parsed, parsed_sources, outcome.rejects = parse_records(records, now)
        outcome.readings = len(parsed)
        columns = None
        if context is not None and parsed:
            columns, outcome.status_changes, outcome.changelog = context.apply(
                parsed, [record.partition for record, _ in parsed_sources])
        keep = [i for i, reading in enumerate(parsed) if not reading.retracts]
        if len(keep) < len(parsed):
            held = columns.outcome == REMOVED if columns is not None else None
            for i, reading in enumerate(parsed):
                if reading.retracts:
                    record, entry = parsed_sources[i]
                    outcome.corrections.append(Correction(reading_key(reading), reading, record, entry, None,
                                                          held=bool(held[i]) if held is not None else False))
            parsed, parsed_sources = [parsed[i] for i in keep], [parsed_sources[i] for i in keep]
            columns = columns.take(np.asarray(keep, dtype=np.intp)) if columns is not None else None
        scored = score_readings(parsed, self.thresholds, model, self.model_threshold, columns)
        self._sort_into_sinks(outcome, scored, parsed_sources, model, now)
        if self.alerts_on and outcome.status_changes:
            if self._rules.device_id not in self._published:  # the Flags' author, before them
                outcome.alerts.append(self._rules.device)
                self._published.add(self._rules.device_id)
            outcome.alerts += [self.flag(change) for change in outcome.status_changes]
        outcome.layers = scored.layer_counts()
        outcome.scored = scored
        return outcome

    def flag(self, change) -> alerts.FhirMessage:
        """The Flag of a sustained-hypertension change (active from its start, inactive at its end)."""
        return alerts.sustained_hypertension_flag(
            change.patient_id, start=change.episode_start,
            end=change.effective if change.change == "ended" else None, author=self._rules)

    def _sort_into_sinks(self, outcome: BatchOutcome, scored: ScoredBatch, sources: list[tuple], model,
                         now: datetime) -> None:
        model_name, model_version = outcome.model = (model.name, model.version) if model is not None else (None, None)
        assessor = self.assessor(model)
        if self.alerts_on and scored.readings and assessor.device_id not in self._published:
            outcome.alerts.append(assessor.device)  # before its first RiskAssessment
            self._published.add(assessor.device_id)
        keys, records, documents = outcome.anomaly_keys, outcome.anomaly_records, outcome.anomaly_documents
        normals, corrections, out_alerts = outcome.normals, outcome.corrections, outcome.alerts
        alerts_on, risk_assessment = self.alerts_on, alerts.risk_assessment
        context = _context_rows(scored.context, len(scored))
        for reading, (record, entry), category, rule_hit, model_hit, probability, types, row in zip(
                scored.readings, sources, scored.categories, scored.rule_anomaly, scored.model_anomaly,
                scored.model_probability, scored.anomaly_types, context):
            key = reading_key(reading)
            if rule_hit or model_hit:
                keys.append(key)
                records.append(record)
                documents.append(AnomalyDocument(
                    reading.effective, reading.observation_id, reading.patient_id, reading.systolic_mm_hg,
                    reading.diastolic_mm_hg, category, types, rule_hit, model_hit, probability, model_name,
                    model_version, DETECTED_BY[rule_hit + 2 * model_hit], now, reading.status,
                    SourcePosition(record.topic, record.partition, record.offset), reading.device_id,
                    reading.device_model, *row))
                if alerts_on:
                    out_alerts.append(risk_assessment(
                        reading, category=category, anomaly_types=types, rule_anomaly=rule_hit,
                        model_anomaly=model_hit, probability=probability, assessor=assessor, key=key))
                routed = "anomaly"
            else:
                partition, offset = record.partition, record.offset
                lines = normals.get(partition)
                if lines is None:
                    lines = normals[partition] = []
                lines.append(((offset, entry), ArchiveRecord(
                    reading.observation_id, reading.patient_id, reading.effective, reading.systolic_mm_hg,
                    reading.diastolic_mm_hg, category, probability, model_name, model_version, now,
                    KafkaPosition(partition, offset, entry), reading.status, reading.device_id,
                    reading.device_model, *row)))
                outcome.normal_keys.add(key)
                routed = "normal"
            if reading.status != "final" and reading.amends:
                corrections.append(Correction(key, reading, record, entry, routed))


_NO_CONTEXT = (None, None, 0, None, None, 0, None)


def _context_rows(context, n: int):
    """Per reading, the documents' context fields (NaN where absent: encoded as null)."""
    if context is None:
        return [_NO_CONTEXT] * n
    return zip(context.baseline_systolic.tolist(), context.baseline_diastolic.tolist(),
               context.baseline_readings.tolist(), context.home_average_systolic.tolist(),
               context.home_average_diastolic.tolist(), context.home_average_readings.tolist(),
               context.arv_systolic.tolist())


@dataclass(frozen=True, slots=True)
class _Named:
    name: str
    version: str
