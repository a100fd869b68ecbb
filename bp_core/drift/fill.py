"""Write scored readings straight into the consumer's sinks, without Kafka (tests, benchmarks).

``SinkFiller`` turns a frame of readings into the FHIR Observations the simulator sends,
routes them with the consumer's own ``BatchRouter`` (rules, the model, the patient
context when given) and writes the outcome with the sinks' own classes: anomaly
documents to Elasticsearch, normal readings to the archive. It fills a window of a
million readings in seconds; the consumer remains the only writer in production.
"""

from __future__ import annotations

import zlib
from datetime import datetime
from typing import NamedTuple

import numpy as np

from bp_core.consumer.batch import BatchRouter
from bp_core.fhir.build import observation_bytes
from bp_core.rules import Thresholds
from bp_core.settings import Settings
from bp_core.sinks.archive import ArchiveBatch, ArchiveSink
from bp_core.sinks.elasticsearch import ElasticsearchSink
from bp_core.sinks.es_template import ensure_index_template as ensure_contract_index  # noqa: F401 (the template has every field)


class _Record(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes


class SinkFiller:
    """Routes readings as the consumer does and writes them to one deployment's sinks.

    Kafka positions are invented: a patient's partition from a hash of its id, offsets
    counting up from where the filler's last call ended, so the archive's replay guard
    accepts every line. Each patient's history is kept as the consumer keeps it (a
    ``PatientContext`` in memory) unless ``patient_context`` is off. Readings the consumer
    would dead-letter (impossible values) are skipped.
    """

    def __init__(self, settings: Settings, es, model=None, *, partitions: int = 3, patient_context: bool = True) -> None:
        from bp_core.consumer.state import PatientContext
        from bp_core.context import PatientStore

        self.settings = settings
        self.model = model
        self.context = None
        if patient_context:
            self.context = PatientContext("in-memory", reader=None)
            self.context.stores.update({p: PatientStore() for p in range(partitions)})
        self.router = BatchRouter(Thresholds.from_settings(settings), settings.model_threshold)
        self.es = es
        self.archive = ArchiveSink(settings.archive_dir, settings.topic)
        self.partitions = partitions
        self.next_offset = 0

    def write(self, frame, ingested_at: datetime, *, refresh: bool = True) -> tuple[int, int]:
        """Route and write one frame (``Cohort.readings_frame`` columns, with or without
        ``device_id``/``device_model``), all ingested at ``ingested_at``.

        Returns:
            (anomalies written to Elasticsearch, normal readings archived).
        Raises:
            SinkUnavailable: a sink refused the batch.
        """
        n = len(frame)
        devices = (zip(frame["device_id"].tolist(), frame["device_model"].tolist()) if "device_id" in frame.columns
                   else [(None, None)] * n)
        records = [
            _Record(self.settings.topic, zlib.crc32(patient.encode()) % self.partitions, self.next_offset + row,
                    patient.encode(),
                    observation_bytes(observation_id=obs_id, patient_id=patient, effective=effective,
                                      systolic_mm_hg=int(s), diastolic_mm_hg=int(d), device_id=device_id,
                                      device_model=device_model))
            for row, (obs_id, patient, effective, s, d, (device_id, device_model)) in enumerate(zip(
                frame["observation_id"].tolist(), frame["patient_id"].tolist(),
                frame["effective"].dt.to_pydatetime().tolist(), frame["systolic_mm_hg"].to_numpy(np.int64).tolist(),
                frame["diastolic_mm_hg"].to_numpy(np.int64).tolist(), devices))]
        self.next_offset += n
        outcome = self.router.route(records, self.model, ingested_at, self.context)
        sink = ElasticsearchSink(self.es, self.settings.es_index)
        sink.extend(outcome.anomaly_keys, outcome.anomaly_documents, outcome.anomaly_records)
        rejected = sink.flush()
        if rejected:
            raise ValueError(f"Elasticsearch refused {len(rejected)} documents: {rejected[0].reason}")
        self.archive.write(ArchiveBatch(outcome.normals))
        if refresh:
            self.es.indices.refresh(index=self.settings.es_index)
        return outcome.anomalies, outcome.normal_count


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
