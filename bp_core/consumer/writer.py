"""A prepared batch and the writer that makes it durable in every sink.

``BatchWriter.write`` first resolves the batch's corrections (``corrections.resolve``),
then flushes Elasticsearch and, on a thread of its own meanwhile, the archive (fsync),
the alerts topic and the patient-state changelog (acknowledged); then the dead-letter topic (acknowledged), which
also receives what Elasticsearch refused. Each sink resends only what it lacks, so a
write retried after a failure writes nothing twice. ``submit`` runs it on the writer
thread, so the next batch is prepared while this one is written.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from bp_core.consumer import corrections
from bp_core.sinks.archive import ArchiveBatch, ArchiveSink
from bp_core.sinks.dlq import DeadLetterSink
from bp_core.sinks.elasticsearch import ElasticsearchSink
from bp_core.sinks.kafka_records import KafkaRecordSink

log = logging.getLogger("bp_core.consumer")


@dataclass
class PreparedBatch:
    """One polled batch, parsed and routed, with its own sink buffers."""

    offsets: dict                      # TopicPartition -> next offset to commit
    first_offsets: dict                # TopicPartition -> first offset (to rewind)
    es: ElasticsearchSink | None
    archive: ArchiveBatch | None
    dlq: DeadLetterSink
    alerts: KafkaRecordSink | None = None
    changelog: KafkaRecordSink | None = None   # the patient-state changes it made
    now: object = None                 # the batch's consumption time
    messages: int = 0
    readings: int = 0
    anomalies: int = 0
    normals: int = 0
    rejected: int = 0
    by_layer: dict = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    index_rejects: int = 0
    sink_seconds: dict = field(default_factory=dict)  # sink -> seconds of the write that succeeded
    # Corrections (bp_core.consumer.corrections) and what they need from the batch:
    corrections: list = field(default_factory=list)
    corrections_resolved: bool = False
    anomaly_keys: list = field(default_factory=list)
    model: tuple = (None, None)        # (name, version) of the model that scored it
    normal_keys: set = field(default_factory=set)
    status_changes: list = field(default_factory=list)  # bp_core.context.StatusChange
    revoked: bool = False              # its partitions were revoked while it was written
    future: Future | None = None       # set by ``BatchWriter.submit``


@dataclass
class Sinks:
    """The clients every batch's sink buffers write through."""

    es: object                         # elasticsearch.Elasticsearch
    es_index: str
    dlq_producer: object               # kafka-python KafkaProducer
    dlq_topic: str
    ledger: object                     # bp_core.dead_letters.ledger.DeadLetterLedger
    dlq_reader: object
    fast_producer: object | None       # confluent_kafka.Producer (alerts, changelog)
    alerts_topic: str | None           # None: no alerts
    changelog_topic: str | None        # None: no patient state

    def batch(self, polled: dict, outcome, now) -> PreparedBatch:
        """A prepared batch of a poll (``{TopicPartition: records}``) and its routed outcome
        (``bp_core.consumer.batch.BatchOutcome``), its sink buffers filled."""
        prepared = PreparedBatch(
            offsets={tp: records[-1].offset + 1 for tp, records in polled.items()},
            first_offsets={tp: records[0].offset for tp, records in polled.items()},
            es=ElasticsearchSink(self.es, self.es_index),
            archive=ArchiveBatch(outcome.normals),
            dlq=DeadLetterSink(self.dlq_producer, self.dlq_topic, ledger=self.ledger, reader=self.dlq_reader),
            alerts=KafkaRecordSink(self.fast_producer, "alerts") if self.alerts_topic else None,
            changelog=(KafkaRecordSink(self.fast_producer, "patient-state changelog") if self.changelog_topic
                       else None),
            now=now, messages=outcome.messages, readings=outcome.readings, anomalies=outcome.anomalies,
            normals=outcome.normal_count, rejected=len(outcome.rejects), by_layer=outcome.layers,
            corrections=outcome.corrections, anomaly_keys=outcome.anomaly_keys, model=outcome.model,
            normal_keys=outcome.normal_keys, status_changes=outcome.status_changes,
        )
        prepared.es.extend(outcome.anomaly_keys, outcome.anomaly_documents, outcome.anomaly_records)
        if prepared.alerts is not None:
            for message in outcome.alerts:
                prepared.alerts.add(self.alerts_topic, message.key, message.value)
        if prepared.changelog is not None:
            for partition, key, value in outcome.changelog:
                prepared.changelog.add(self.changelog_topic, key, value, partition=partition)
        for record, reason in outcome.rejects:
            prepared.dlq.reject(record, reason)
        return prepared


def hand_over(batch: PreparedBatch, *, write_timeout_s: float, settle_timeout_s: float) -> tuple[bool, bool]:
    """Before a batch's partitions go to another member: wait for its write to end, then
    for every dead letter it sent to land or fail (the next owner reads the DLQ back
    before it writes, so none may land after that). Marks the batch revoked.

    Returns:
        (written, settled): whether the batch is durable, and whether no dead-letter
        send of it is still in flight.
    """
    written = True
    try:
        batch.future.result(timeout=write_timeout_s)
    except Exception as exc:  # not written: the next owner replays it idempotently
        log.warning("batch in flight not written before revocation (%s): dropping it", exc)
        written = False
    batch.revoked = True
    return written, batch.future.done() and batch.dlq.settle_in_flight(settle_timeout_s)


class BatchWriter:
    """Writes prepared batches, one at a time, on a writer thread; ``router`` names who
    assessed a corrected anomaly."""

    def __init__(self, archive: ArchiveSink, router) -> None:
        self.archive = archive
        self.router = router
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bp-sink-writer")
        self._archiver = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bp-archive-writer")

    def submit(self, batch: PreparedBatch) -> None:
        """Start writing ``batch`` on the writer thread (``batch.future`` tells the outcome)."""
        batch.future = self._writer.submit(self.write, batch)

    def write(self, batch: PreparedBatch) -> None:
        """Make a batch durable: Elasticsearch and the archive at once, then the DLQ.

        Both Elasticsearch and the archive have finished when this returns or raises.

        Raises:
            SinkUnavailable: a sink refused for now; calling ``write`` again resends
                only what is missing.
        """
        started = time.monotonic()
        corrections.resolve(batch, self.router, batch.now)
        side = self._archiver.submit(self._write_side, batch)
        try:
            rejected = batch.es.flush()
        except BaseException:
            side.exception()  # waits: no archive write may outlive this attempt
            raise
        indexed = time.monotonic()
        seconds = side.result()
        for document in rejected:
            batch.dlq.reject(document.key, document.reason, stage="index")
            batch.index_rejects += 1
        written = time.monotonic()
        batch.dlq.flush()
        batch.sink_seconds = {"elasticsearch": indexed - started, **seconds, "dlq": time.monotonic() - written}

    def close(self) -> None:
        """Wait for the write in progress, if any, and stop the threads."""
        self._writer.shutdown(wait=True)
        self._archiver.shutdown(wait=True)

    def _write_side(self, batch: PreparedBatch) -> dict:
        """The archive, the alerts topic, the patient-state changelog: what is written while
        Elasticsearch indexes."""
        started = time.monotonic()
        self.archive.write(batch.archive)
        archived = time.monotonic()
        if batch.alerts is not None and len(batch.alerts):
            batch.alerts.flush()
        alerted = time.monotonic()
        if batch.changelog is not None and len(batch.changelog):
            batch.changelog.flush()
        return {"archive": archived - started, "alerts": alerted - archived, "state": time.monotonic() - alerted}
