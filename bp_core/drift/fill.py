"""Write scored readings straight into the consumer's sinks, without Kafka (tests, benchmarks).

``SinkFiller`` scores a frame of readings with ``bp_core.scoring.score_readings``
(the consumer's own rules and model call) and hands the results to the sinks' own
classes: anomalies to ``ElasticsearchSink``, normal readings to ``ArchiveSink``, in
the documents' contract shape, device fleet and (null) context fields included. It is
the public hook for filling a window of a million readings in seconds; the consumer
remains the only writer in production.

``CONTRACT_FIELDS`` are the document fields the second wave adds to both sinks;
``ensure_contract_index`` puts the index template with them (a no-op addition once
``bp_core.sinks.es_template`` lists them itself).
"""

from __future__ import annotations

from datetime import datetime

import numpy as np

from bp_core.reading import Reading
from bp_core.rules import Thresholds
from bp_core.scoring import DETECTED_BY, score_readings
from bp_core.settings import Settings
from bp_core.sinks.archive import ArchiveBatch, ArchiveSink
from bp_core.sinks.elasticsearch import ElasticsearchSink

CONTRACT_FIELDS: dict[str, dict] = {
    "device_id": {"type": "keyword"},
    "device_model": {"type": "keyword"},
    "baseline_systolic": {"type": "float"},
    "baseline_diastolic": {"type": "float"},
    "baseline_readings": {"type": "integer"},
    "home_average_systolic": {"type": "float"},
    "home_average_diastolic": {"type": "float"},
    "home_average_readings": {"type": "integer"},
    "arv_systolic": {"type": "float"},
}
_CONTEXT = [name for name in CONTRACT_FIELDS if not name.startswith("device_")]


def ensure_contract_index(es, index: str) -> None:
    """The index template (``bp_core.sinks.es_template``) plus any ``CONTRACT_FIELDS`` it
    lacks, then the index."""
    from bp_core.sinks.es_template import index_template, wait_until_searchable

    body = index_template(index)
    properties = body["template"]["mappings"]["properties"]
    body["template"]["mappings"]["properties"] = {**CONTRACT_FIELDS, **properties}
    es.indices.put_index_template(name=index, **body)
    if not es.indices.exists(index=index):
        es.options(ignore_status=400).indices.create(index=index)
    wait_until_searchable(es, index)


class SinkFiller:
    """Scores readings and writes them to one deployment's sinks, as the consumer would.

    Kafka positions are invented: partition = row number modulo ``partitions``, offsets
    counting up from where the filler's last call ended, so the archive's replay guard
    accepts every line.
    """

    def __init__(self, settings: Settings, es, model=None, *, partitions: int = 3) -> None:
        self.settings = settings
        self.model = model
        self.thresholds = Thresholds.from_settings(settings)
        self.es_sink = ElasticsearchSink(es, settings.es_index)
        self.archive = ArchiveSink(settings.archive_dir, settings.topic)
        self.partitions = partitions
        self.next_offset = 0

    def write(self, frame, ingested_at: datetime, *, refresh: bool = True) -> tuple[int, int]:
        """Score and write one frame (``Cohort.readings_frame`` columns, optionally
        ``device_id``/``device_model``), all ingested at ``ingested_at``.

        Returns:
            (anomalies written to Elasticsearch, normal readings archived).
        Raises:
            SinkUnavailable: a sink refused the batch.
        """
        n = len(frame)
        ids = frame["observation_id"].tolist()
        patients = frame["patient_id"].tolist()
        effective = frame["effective"].dt.to_pydatetime().tolist()
        systolic = frame["systolic_mm_hg"].to_numpy(np.float64).tolist()
        diastolic = frame["diastolic_mm_hg"].to_numpy(np.float64).tolist()
        readings = [Reading(i, p, e, s, d) for i, p, e, s, d in zip(ids, patients, effective, systolic, diastolic)]
        routed = score_readings(readings, self.thresholds, self.model, self.settings.model_threshold)
        device_ids = frame["device_id"].tolist() if "device_id" in frame.columns else [None] * n
        device_models = frame["device_model"].tolist() if "device_model" in frame.columns else [None] * n
        name, version = (self.model.name, self.model.version) if self.model is not None else (None, None)
        context = dict.fromkeys(_CONTEXT)
        doc_ids, documents, archived = [], [], ArchiveBatch()
        for row, reading in enumerate(readings):
            partition, offset = row % self.partitions, self.next_offset + row
            device = {"device_id": device_ids[row], "device_model": device_models[row]}
            rule_hit, model_hit = routed.rule_anomaly[row], routed.model_anomaly[row]
            if rule_hit or model_hit:
                doc_ids.append(reading.observation_id)
                documents.append({
                    "@timestamp": reading.effective, "observation_id": reading.observation_id,
                    "patient_id": reading.patient_id, "systolic": reading.systolic_mm_hg,
                    "diastolic": reading.diastolic_mm_hg, "category": routed.categories[row],
                    "anomaly_types": routed.anomaly_types[row], "rule_anomaly": rule_hit, "model_anomaly": model_hit,
                    "model_probability": routed.model_probability[row], "model_name": name, "model_version": version,
                    "detected_by": DETECTED_BY[rule_hit + 2 * model_hit], "ingested_at": ingested_at,
                    "status": reading.status,
                    "source": {"topic": self.settings.topic, "partition": partition, "offset": offset},
                    **device, **context})
            else:
                archived.lines.setdefault(partition, []).append(((offset, 0), {
                    "observation_id": reading.observation_id, "patient_id": reading.patient_id,
                    "effective": reading.effective, "systolic": reading.systolic_mm_hg,
                    "diastolic": reading.diastolic_mm_hg, "category": routed.categories[row],
                    "model_probability": routed.model_probability[row], "model_name": name,
                    "model_version": version, "archived_at": ingested_at,
                    "kafka": {"partition": partition, "offset": offset, "entry": 0}, "status": reading.status,
                    **device, **context}))
        self.next_offset += n
        self.es_sink.extend(doc_ids, documents, doc_ids)
        rejected = self.es_sink.flush()
        if rejected:
            raise ValueError(f"Elasticsearch refused {len(rejected)} documents: {rejected[0].reason}")
        self.archive.write(archived)
        if refresh:
            self.es_sink.es.indices.refresh(index=self.settings.es_index)
        return len(documents), len(archived)


# Until the simulator's scenarios land (``--scenario cuff-offset``): three fleets by a hash
# of the patient id, 40 / 40 / 20 % of the patients, and the +15/+8 mmHg offset of the
# ``cuff-offset`` world applied to one fleet's readings (the truth is unchanged).
FLEETS: tuple[tuple[str, float], ...] = (("cuff-a", 0.4), ("cuff-b", 0.4), ("cuff-c", 0.2))
CUFF_OFFSET_MM_HG = (15, 8)


def with_fleets(frame, *, offset_fleet: str | None = None, offset: tuple[int, int] = CUFF_OFFSET_MM_HG):
    """A copy of a readings frame with ``device_id``/``device_model`` per patient
    (``FLEETS``) and, with ``offset_fleet``, that fleet's measured values raised by
    ``offset`` (systolic, diastolic)."""
    import hashlib

    frame = frame.copy()
    patients = frame["patient_id"].to_numpy(dtype=object)
    distinct, inverse = np.unique(patients, return_inverse=True)
    share = np.array([int.from_bytes(hashlib.blake2b(p.encode(), digest_size=4).digest(), "little") / 2 ** 32
                      for p in distinct.tolist()])
    edges = np.cumsum([weight for _, weight in FLEETS])
    fleet_index = np.minimum(np.searchsorted(edges, share, side="right"), len(FLEETS) - 1)
    names = np.array([name for name, _ in FLEETS], dtype=object)
    frame["device_model"] = names[fleet_index][inverse]
    frame["device_id"] = [f"{model}-{pid[:8]}" for model, pid in zip(frame["device_model"].tolist(), patients.tolist())]
    if offset_fleet is not None:
        hit = (frame["device_model"] == offset_fleet).to_numpy()
        frame.loc[hit, "systolic_mm_hg"] += offset[0]
        frame.loc[hit, "diastolic_mm_hg"] += offset[1]
    return frame
