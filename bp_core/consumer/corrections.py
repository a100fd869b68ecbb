"""Corrections of earlier readings, resolved when their batch is written.

An ``entered-in-error`` Observation withdraws the reading with the same key
(``bp_core.fhir.ids.reading_key``); ``amended`` / ``corrected`` replace it. What the earlier
reading became decides what to undo:

- an anomaly (its document is in Elasticsearch, or earlier in the same batch): the
  document is deleted (a retraction, or an amendment now normal; an amendment still
  anomalous overwrites it under the same ``_id``), and its RiskAssessment is withdrawn
  (same id, status ``entered-in-error``);
- a normal reading (the patient state held it, or it is earlier in the batch): a
  ``superseded`` archive line voids its line (a retraction, or an amendment now an
  anomaly; an amendment still normal simply adds its own, later line);
- a retraction of a reading never seen goes to the dead-letter topic with that reason.

The lookup is one ``mget`` per batch that holds corrections, on the writer thread, after
the batches before it are written; the bulk request then indexes before it deletes.
"""

from __future__ import annotations

from bp_core.consumer.batch import BatchRouter, Correction
from bp_core.consumer.documents import KafkaPosition, SupersededRecord
from bp_core.errors import SinkUnavailable
from bp_core.fhir.alerts import risk_assessment_retraction

NEVER_SEEN = "entered-in-error for {key}: no such reading was seen (nothing to retract)"


def resolve(batch, router: BatchRouter, now) -> None:
    """Add to a prepared batch's sink buffers what its corrections undo (once per batch).

    Raises:
        SinkUnavailable: Elasticsearch could not be asked; the write is retried later.
    """
    if batch.corrections_resolved or not batch.corrections:
        return
    in_batch = set(batch.anomaly_keys)
    normal_keys = batch.normal_keys
    stored = _stored_anomalies(batch.es, [c.key for c in batch.corrections if c.key not in in_batch])
    for correction in batch.corrections:
        model = batch.model if correction.key in in_batch else stored.get(correction.key)
        was_anomaly = model is not None
        was_normal = correction.held or correction.key in normal_keys
        if correction.routed is None and not (was_anomaly or was_normal):
            batch.dlq.reject(correction.record, NEVER_SEEN.format(key=correction.key))
            batch.rejected += 1
            continue
        if was_anomaly and correction.routed != "anomaly":
            batch.es.delete(correction.key)
            if batch.alerts is not None:
                message = risk_assessment_retraction(correction.reading, router.assessor_of(*model), key=correction.key)
                batch.alerts.add(router.alerts_topic, message.key, message.value)
        if correction.routed != "normal" and not was_anomaly and (was_normal or correction.routed == "anomaly"):
            _supersede(batch, correction, now)  # its normal line, if any, no longer stands
    batch.corrections_resolved = True


def _stored_anomalies(es_sink, keys: list[str]) -> dict[str, tuple]:
    """The (model name, model version) of the anomaly documents held under these ids."""
    if not keys:
        return {}
    try:
        found = es_sink.es.mget(index=es_sink.index, ids=keys, source_includes=["model_name", "model_version"])
    except Exception as exc:  # the client raises many transport/API types; all mean "not asked"
        raise SinkUnavailable(f"Elasticsearch could not look up corrected readings: {type(exc).__name__}: {exc}") from exc
    return {doc["_id"]: (doc["_source"].get("model_name"), doc["_source"].get("model_version"))
            for doc in found["docs"] if doc.get("found")}


def _supersede(batch, correction: Correction, now) -> None:
    record = correction.record
    reason = ("entered in error" if correction.routed is None
              else f"{correction.reading.status}: now an anomaly, in Elasticsearch")
    line = SupersededRecord(correction.key, correction.reading.observation_id, correction.reading.patient_id,
                            correction.reading.status, reason, now,
                            KafkaPosition(record.partition, record.offset, correction.entry))
    lines = batch.archive.lines.setdefault(record.partition, [])
    lines.append(((record.offset, correction.entry), line))
    lines.sort(key=lambda item: item[0])  # the archive keeps each partition's lines in position order
