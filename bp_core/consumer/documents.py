"""The documents the consumer's sinks store: typed structs, encoded by ``msgspec`` in C.

``AnomalyDocument`` is the Elasticsearch document (its fields are the index template's,
``bp_core.sinks.es_template.ANOMALY_FIELDS``; a unit test keeps them equal) and
``ArchiveRecord`` the archive's JSON line. Datetimes are RFC 3339 (``Z`` for UTC). The
context fields (``bp_core.context``) are null where they do not exist (NaN is encoded as
null): no baseline before 5 previous readings, no ARV for a first reading.
"""

from __future__ import annotations

from datetime import datetime

import msgspec


class SourcePosition(msgspec.Struct, gc=False):
    """Where an anomaly was read from."""

    topic: str
    partition: int
    offset: int


class AnomalyDocument(msgspec.Struct, gc=False):
    """The Elasticsearch document of an anomalous reading (no patient names, ever)."""

    timestamp: datetime = msgspec.field(name="@timestamp")  # the Observation's effective time
    observation_id: str
    patient_id: str
    systolic: float
    diastolic: float
    category: str
    anomaly_types: tuple[str, ...]
    rule_anomaly: bool
    model_anomaly: bool
    model_probability: float | None
    model_name: str | None
    model_version: str | None
    detected_by: tuple[str, ...]
    ingested_at: datetime
    status: str
    source: SourcePosition
    device_id: str | None
    device_model: str | None
    baseline_systolic: float | None
    baseline_diastolic: float | None
    baseline_readings: int
    home_average_systolic: float | None
    home_average_diastolic: float | None
    home_average_readings: int
    arv_systolic: float | None


class KafkaPosition(msgspec.Struct, gc=False):
    """Where a normal reading was read from: ``entry`` is its index inside the message."""

    partition: int
    offset: int
    entry: int


class ArchiveRecord(msgspec.Struct, gc=False):
    """The archive's JSON line of a normal reading."""

    observation_id: str
    patient_id: str
    effective: datetime
    systolic: float
    diastolic: float
    category: str
    model_probability: float | None
    model_name: str | None
    model_version: str | None
    archived_at: datetime
    kafka: KafkaPosition
    status: str
    device_id: str | None
    device_model: str | None
    baseline_systolic: float | None
    baseline_diastolic: float | None
    baseline_readings: int
    home_average_systolic: float | None
    home_average_diastolic: float | None
    home_average_readings: int
    arv_systolic: float | None


class SupersededRecord(msgspec.Struct, gc=False, tag="superseded", tag_field="record"):
    """An archive line that voids the earlier line(s) of a reading: it was entered in
    error (``status`` ``entered-in-error``), or amended into an anomaly (now in
    Elasticsearch). A reader keeps, per ``reading_key``, only what follows the last one."""

    reading_key: str
    observation_id: str
    patient_id: str
    status: str
    reason: str
    archived_at: datetime
    kafka: KafkaPosition
