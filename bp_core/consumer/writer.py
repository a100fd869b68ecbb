"""A prepared batch and the writer that makes it durable in every sink.

``BatchWriter.write`` flushes Elasticsearch and, on a thread of its own meanwhile, the
archive (fsync); then the dead-letter topic (acknowledged), which also receives what
Elasticsearch refused. Each sink resends only what it lacks, so a write retried after
a failure writes nothing twice. ``submit`` runs it on the writer thread, so the next
batch is prepared while this one is written.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from bp_core.sinks.archive import ArchiveBatch, ArchiveSink
from bp_core.sinks.dlq import DeadLetterSink
from bp_core.sinks.elasticsearch import ElasticsearchSink

log = logging.getLogger("bp_core.consumer")


@dataclass
class PreparedBatch:
    """One polled batch, parsed and routed, with its own sink buffers."""

    offsets: dict                      # TopicPartition -> next offset to commit
    first_offsets: dict                # TopicPartition -> first offset (to rewind)
    es: ElasticsearchSink | None
    archive: ArchiveBatch | None
    dlq: DeadLetterSink
    messages: int = 0
    readings: int = 0
    anomalies: int = 0
    normals: int = 0
    rejected: int = 0
    by_layer: dict = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    index_rejects: int = 0
    sink_seconds: list = field(default_factory=lambda: [0.0, 0.0, 0.0])  # ES, archive, DLQ
    revoked: bool = False              # its partitions were revoked while it was written
    future: Future | None = None       # set by ``BatchWriter.submit``


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


def reject(dlq: DeadLetterSink, record, reason: str, stage: str = "parse") -> None:
    """Buffer a Kafka record for the dead-letter topic, with why and where from."""
    dlq.add(key=record.key, value=record.value, reason=reason, stage=stage,
            source_topic=record.topic, partition=record.partition, offset=record.offset)


class BatchWriter:
    """Writes prepared batches, one at a time, on a writer thread."""

    def __init__(self, archive: ArchiveSink) -> None:
        self.archive = archive
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
        archiving = self._archiver.submit(self._write_archive, batch.archive)
        try:
            rejected = batch.es.flush()
        except BaseException:
            archiving.exception()  # waits: no archive write may outlive this attempt
            raise
        indexed = time.monotonic()
        archive_seconds = archiving.result()
        for document in rejected:
            reject(batch.dlq, document.key, document.reason, stage="index")
            batch.index_rejects += 1
        written = time.monotonic()
        batch.dlq.flush()
        batch.sink_seconds = [indexed - started, archive_seconds, time.monotonic() - written]

    def close(self) -> None:
        """Wait for the write in progress, if any, and stop the threads."""
        self._writer.shutdown(wait=True)
        self._archiver.shutdown(wait=True)

    def _write_archive(self, batch: ArchiveBatch) -> float:
        started = time.monotonic()
        self.archive.write(batch)
        return time.monotonic() - started
