"""The consumer service: poll a batch, validate, score, route, make it durable, commit.

Each batch (up to ``batch_size`` messages) goes through two stages:

1. prepare (this thread): ``bp_core.consumer.batch.route_records`` parses every
   message, scores the valid readings in one vectorised call (rules + the served
   model) and sorts them into the batch's own buffers: anomaly documents for
   Elasticsearch, normal records for the archive, rejects for the dead-letter topic;
2. write (a writer thread): flush Elasticsearch and, on a thread of its own meanwhile,
   the archive (fsync); then the DLQ (acked); then, back on this thread, commit the
   batch's offsets — only now, when every outcome is durable. The commit is
   asynchronous (the following polls complete it; a failed one is covered by the
   next); the last one, at exit, is synchronous.

One batch is written while the next is prepared (at most one in flight), so parsing
and scoring overlap the sinks' I/O; commits stay in order, batch after batch. While a
batch is in flight, a poll waits at most ``_INFLIGHT_POLL_MS`` for records, so a
batch's commit never waits for the next message.

A sink that fails transiently (Elasticsearch down, archive folder unwritable, DLQ not
acked) pauses every partition and retries the same batch with backoff; the loop keeps
polling (nothing is returned while paused) so the member stays in its group. Nothing is
committed until the batch is written, so a crash at any point replays from the last
commit, and the sinks' idempotence turns the replay into no duplicate: Elasticsearch
by ``_id``, the archive by Kafka position, the dead-letter topic by the mark committed
with the offsets (``bp_core.dead_letters.ledger``): the first time a batch holds a
partition, what the DLQ holds for it since its last commit is read back, and not sent
again.

Rebalance callbacks run while this thread is inside ``poll()``. A revocation waits for
the batch in flight to be written; its offsets are then committed for the partitions
this member still owns (another owner re-reads the rest, and the sinks skip what
already exists). A batch that cannot be written when its partitions go (a sink is down)
is dropped, uncommitted, with every batch prepared after it.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import chain

import orjson

from bp_core.errors import BPError, SinkUnavailable
from bp_core.consumer.metrics import ConsumerMetrics
from bp_core.consumer.batch import route_records
from bp_core.consumer.coordinator_check import check_coordinator_in_place
from bp_core.consumer.native_records import use_native_records
from bp_core.rules import Thresholds
from bp_core.settings import Settings
from bp_core.sinks.archive import ArchiveBatch, ArchiveSink
from bp_core.sinks.dlq import DeadLetterSink
from bp_core.dead_letters.ledger import DeadLetterLedger, DeadLetterReader, decode_mark
from bp_core.sinks.elasticsearch import ElasticsearchSink, error_reason, refused_for_good
from bp_core.sinks.es_template import ensure_index_template

log = logging.getLogger("bp_core.consumer")


@dataclass
class ConsumerStats:
    """Running totals, for the progress log and the final summary."""

    messages: int = 0
    readings: int = 0
    anomalies: int = 0
    normals: int = 0
    rejected: int = 0
    dlq_already_held: int = 0             # rejects not sent: the DLQ held them (sent before a crash, say)
    batches: int = 0
    commits: int = 0
    started: float = field(default_factory=time.monotonic)
    first_batch_at: float | None = None   # monotonic time the first batch arrived
    last_commit_at: float | None = None   # monotonic time of the last successful commit
    last_batch_at: float | None = None    # monotonic time the last batch was durable and its commit sent
    # Where the time went, in seconds, from the first batch on (like the rate). This
    # thread: polling Kafka, preparing batches (parse, score, route), waiting for the
    # writer; the writer threads: each sink (the archive's time overlaps Elasticsearch's).
    poll_s: float = 0.0
    prepare_s: float = 0.0
    wait_s: float = 0.0
    # Of poll_s and prepare_s, the time this thread was on a CPU (time.thread_time): the
    # rest it waited, for a fetch, for kafka-python's network thread, the GIL or a core.
    poll_cpu_s: float = 0.0
    prepare_cpu_s: float = 0.0
    index_s: float = 0.0
    archive_s: float = 0.0
    dlq_s: float = 0.0

    def line(self, until: float | None = None) -> str:
        """The totals on one line; the rate counts from the first batch (not from start-up:
        imports, group join) until ``until`` (monotonic; default now)."""
        end = time.monotonic() if until is None else until
        elapsed = max(end - (self.first_batch_at or self.started), 1e-9)
        return (f"messages={self.messages} readings={self.readings} anomalies={self.anomalies} "
                f"normals={self.normals} rejected={self.rejected} rate={self.messages / elapsed:.0f}/s"
                + (f" dlq_already_held={self.dlq_already_held}" if self.dlq_already_held else ""))


@dataclass(frozen=True)
class ConsumerOptions:
    """Knobs of ``bp consume`` (the rest comes from ``Settings``)."""

    from_beginning: bool = False
    exit_when_idle: float | None = None
    model_refresh: float = 30.0
    metrics_port: int | None = None
    batch_size: int = 5000
    poll_timeout_ms: int = 500
    progress_every: float = 5.0
    max_backoff: float = 10.0


def _listener_base():
    from kafka import ConsumerRebalanceListener

    return ConsumerRebalanceListener


@dataclass
class PreparedBatch:
    """One polled batch, parsed and routed, with its own sink buffers."""

    offsets: dict                      # TopicPartition -> next offset to commit
    first_offsets: dict                # TopicPartition -> first offset (to rewind)
    es: ElasticsearchSink
    archive: ArchiveBatch
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
    future: Future | None = None


def _reject(dlq: DeadLetterSink, record, reason: str, stage: str = "parse") -> None:
    dlq.add(key=record.key, value=record.value, reason=reason, stage=stage,
            source_topic=record.topic, partition=record.partition, offset=record.offset)


class _Listener(_listener_base()):
    """Rebalance listener: records what changed; the service acts on it between batches."""

    def __init__(self, service: "ConsumerService") -> None:
        self.service = service

    def on_partitions_revoked(self, revoked):
        self.service._on_revoked(revoked)

    def on_partitions_assigned(self, assigned):
        self.service._on_assigned(assigned)

    def on_partitions_lost(self, lost):
        self.service._on_revoked(lost)


class ConsumerService:
    """The long-running ``bp consume`` process (also used in-process by tests)."""

    _REVOCATION_WAIT_S = 60.0  # how long a revocation waits for the batch being written
    _DLQ_DELIVERY_TIMEOUT_MS = 120_000  # the DLQ producer's: a send has landed or failed by then
    _INFLIGHT_POLL_MS = 20     # poll timeout while a batch is being written
    _RECOMMIT_DELAY_S = 0.5    # after a failed commit, before the durable offsets are sent again
    _RETRY_BACKOFF_MS = 20     # kafka-python's retry backoff, also its idle sleep inside poll (see _connect)
    _ELSEWHERE_CHECK_S = 1.0   # when idle, how often to ask the broker about partitions owned elsewhere

    def __init__(self, settings: Settings, options: ConsumerOptions = ConsumerOptions(), *,
                 model_provider=None) -> None:
        self.settings = settings
        self.options = options
        self.thresholds = Thresholds.from_settings(settings)
        self.stats = ConsumerStats()
        self.metrics = ConsumerMetrics()
        self._model_provider = model_provider
        self._stop = threading.Event()
        self._paused = False
        self._inflight: PreparedBatch | None = None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bp-sink-writer")
        self._archiver = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bp-archive-writer")
        self._drop_generation = 0          # bumped each time batches are dropped
        self._exit_code = 0
        self._seen_partitions: set = set()
        self._next_offsets: dict = {}      # owned partition -> next offset, every batch before it durable
        self._committed: dict = {}         # owned partition -> offset the coordinator acknowledged
        self._commits_in_flight = 0
        self._recommit_at: float | None = None  # after a failed commit: when to send the durable offsets again
        # --exit-when-idle counts from here: the last batch made durable or given up
        # (every batch read ends as one or the other), or the last partition
        # assignment; None until the first assignment.
        self._idle_from: float | None = None
        self._assignment_changed_at = 0.0  # last revocation or assignment (see _unread_elsewhere)
        self._next_elsewhere_check = 0.0
        self._consumer = None
        self._producer = None
        self._es = None
        self._dlq_ledger = DeadLetterLedger()
        self._dlq_reader: DeadLetterReader | None = None

    # ------------------------------------------------------------------ lifecycle

    def stop(self, *_args) -> None:
        """Ask the loop to finish the current batch, commit and return (signal-safe)."""
        self._stop.set()

    def run(self) -> int:
        """Consume until stopped (SIGTERM/SIGINT, ``stop()``) or idle; returns an exit code.

        Raises:
            BPError: Kafka is unreachable at start-up.
        """
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)
        log.info("starting with %s", orjson.dumps(self.settings.describe()).decode())
        self._connect()
        # Every batch allocates tens of thousands of short-lived dicts: move the
        # long-lived start-up objects out of the collector's sight and collect the young
        # generation less often, so full collections stop scanning the whole heap.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
        try:
            return self._loop()
        finally:
            self._close()

    def _connect(self) -> None:
        from elasticsearch import Elasticsearch
        from kafka import KafkaConsumer, KafkaProducer
        from kafka.errors import KafkaError

        if self.options.metrics_port:
            self.metrics.serve(self.options.metrics_port)
            log.info("metrics on :%d/metrics", self.options.metrics_port)
        auth = (self.settings.es_username, self.settings.es_password) if self.settings.es_username else None
        self._es = Elasticsearch(self.settings.es_url, basic_auth=auth, request_timeout=30,
                                 retry_on_timeout=False, max_retries=0)
        self._ensure_template()
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=self.settings.kafka_bootstrap, acks="all", linger_ms=5,
                client_id="bp-consumer-dlq", max_block_ms=30_000, request_timeout_ms=30_000,
                delivery_timeout_ms=self._DLQ_DELIVERY_TIMEOUT_MS)
            self._consumer = KafkaConsumer(
                bootstrap_servers=self.settings.kafka_bootstrap,
                group_id=self.settings.consumer_group,
                client_id="bp-consumer",
                enable_auto_commit=False,
                auto_offset_reset="earliest",  # a new group starts at the oldest message, like Kafka Connect sinks
                max_poll_records=self.options.batch_size,
                fetch_max_bytes=64 * 1024 * 1024,
                max_partition_fetch_bytes=8 * 1024 * 1024,
                fetch_min_bytes=1,
                fetch_max_wait_ms=100,
                # kafka-python 3.0.12 sleeps min(poll timeout, retry_backoff_ms) when a poll
                # finds nothing buffered and no fetch in flight, which also happens when a
                # fetch has just completed (a race with its IO thread): at the default
                # 100 ms that was the whole p99 of produce-to-consumer latency (~115 ms).
                retry_backoff_ms=self._RETRY_BACKOFF_MS,
            )
        except KafkaError as exc:
            raise BPError(f"cannot reach Kafka at {self.settings.kafka_bootstrap}: {exc}") from exc
        self._dlq_reader = DeadLetterReader(self.settings.kafka_bootstrap, self.settings.dlq_topic,
                                            self.settings.topic)
        try:
            self._dlq_reader.end()  # connects now, not inside the first batch
        except Exception as exc:  # not fatal: the first batch asks again, and waits for an answer
            log.warning("could not read the dead-letter topic's end yet: %s: %s", type(exc).__name__, exc)
        use_native_records(self._consumer)
        check_coordinator_in_place(self._consumer)
        self._consumer.subscribe(topics=[self.settings.topic], listener=_Listener(self))
        self._archive = ArchiveSink(self.settings.archive_dir, self.settings.topic)
        if self._model_provider is None:
            from bp_core.model.serving import ModelProvider

            # background: a slow or unreachable registry never holds up a batch
            self._model_provider = ModelProvider(self.settings, refresh_seconds=self.options.model_refresh,
                                                 background=True)
        self._model_provider.start()
        self._report_model()

    def _ensure_template(self) -> None:
        """Create the index template; wait (with backoff) while Elasticsearch is down.

        Raises:
            BPError: Elasticsearch refused the template or the index for good (an
                invalid ``BP_ES_INDEX``, wrong credentials): waiting would not help.
        """
        delay = 0.5
        while True:
            try:
                ensure_index_template(self._es, self.settings.es_index)
                return
            except Exception as exc:  # a transport error (ES not up yet) or ES's own answer
                if refused_for_good(getattr(exc, "status_code", None)):
                    raise BPError(f"Elasticsearch at {self.settings.es_url} refused index "
                                  f"{self.settings.es_index!r}: {error_reason(exc)}") from exc
                if self._stop.is_set():
                    raise BPError(f"stopped while waiting for Elasticsearch at {self.settings.es_url}") from exc
                log.warning("Elasticsearch not ready at %s (%s); retrying in %.1fs", self.settings.es_url,
                            type(exc).__name__, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, self.options.max_backoff)

    def _close(self) -> None:
        self._writer.shutdown(wait=True)
        self._archiver.shutdown(wait=True)
        for closer in (lambda: self._model_provider and self._model_provider.close(),
                       lambda: self._consumer and self._consumer.close(autocommit=False),
                       lambda: self._dlq_reader and self._dlq_reader.close(),
                       lambda: self._producer and self._producer.close(timeout=10),
                       lambda: self._es and self._es.close()):
            try:
                closer()
            except Exception as exc:  # closing is best effort; everything durable is committed
                log.debug("close: %s", exc)
        # Until the last batch was written: an idle wait before exiting is no work.
        log.info("stopped: %s", self.stats.line(until=self.stats.last_batch_at))

    # ------------------------------------------------------------------ main loop

    def _loop(self) -> int:
        last_progress = time.monotonic()
        while not self._stop.is_set():
            if self._model_provider.maybe_refresh():
                self._report_model()
            generation = self._drop_generation
            polled_at, polled_cpu = time.monotonic(), time.thread_time()
            batch = self._consumer.poll(timeout_ms=self._poll_timeout_ms())
            now, now_cpu = time.monotonic(), time.thread_time()
            if batch:
                if self.stats.first_batch_at is not None:  # the first poll waits for the group, not for records
                    self.stats.poll_s += now - polled_at
                    self.stats.poll_cpu_s += now_cpu - polled_cpu
                prepared = self._prepare(batch)
                self.stats.prepare_s += time.monotonic() - now
                self.stats.prepare_cpu_s += time.thread_time() - now_cpu
            else:
                prepared = None
            dropped: list[PreparedBatch] = []
            if self._inflight is not None:
                if not self._complete(self._inflight):
                    dropped.append(self._inflight)
                self._inflight = None
            if prepared is not None:
                if dropped or generation != self._drop_generation or not self._take_up(prepared):
                    # It was read after a batch that is given up (it goes too, and both
                    # are read again from the last commit), or the DLQ could not be read.
                    dropped.append(prepared)
                else:
                    self._submit(prepared)
            if dropped:
                self._drop(*dropped)
            self._maybe_recommit(now)
            if prepared is None and not dropped and self._idle_exit_due(now):
                log.info("idle for %.0fs: exiting", self.options.exit_when_idle)
                break
            if now - last_progress >= self.options.progress_every:
                last_progress = now
                self._log_progress()
        if self._inflight is not None:
            self._complete(self._inflight)
            self._inflight = None
        self._commit(dict(self._next_offsets), wait=True)  # settles the asynchronous ones
        self._log_progress()
        return self._exit_code

    def _poll_timeout_ms(self) -> int:
        """How long a poll may wait for records: not past the end of the write in flight,
        whose commit would otherwise wait for the next record (or the full timeout)."""
        if self._inflight is None:
            return self.options.poll_timeout_ms
        if self._inflight.future.done():
            return 0
        return min(self.options.poll_timeout_ms, self._INFLIGHT_POLL_MS)

    def _idle_exit_due(self, now: float) -> bool:
        """Whether ``--exit-when-idle`` seconds passed with nothing read and nothing to write.

        The clock restarts when a batch becomes durable (or is given up), not when it is
        read: a write that took long (Elasticsearch down for a while, the consumer
        paused) says nothing about what the stream holds, and the first poll after it
        may return nothing while the fetch of what waits is still on its way.
        """
        if self.options.exit_when_idle is None or self._idle_from is None or self._inflight is not None:
            return False
        if now - self._idle_from < self.options.exit_when_idle:
            return False
        return not self._unread_elsewhere(now)

    def _unread_elsewhere(self, now: float) -> bool:
        """Whether partitions of the topic owned by another member still hold messages the
        group has not committed, so that exiting now could leave them unread.

        A live member drains them. One that is gone holds them until its session times
        out: a consumer killed while it was joining the group still takes part in the
        next assignment, then the coordinator expires it and rebalances, and only then do
        its partitions come here. Exiting before that would end a back-fill with part of
        the topic unread, and exit code 0. The wait is bounded: a session timeout and
        two heartbeats after the last revocation or assignment, the group has
        rebalanced if a member was gone, and what is left elsewhere (a live member still
        busy, a partition that ends in a transaction marker) no longer holds this one.
        If the broker cannot say, this member waits, within the same bound.
        """
        from kafka import TopicPartition

        owned = self._consumer.assignment()
        partitions = self._consumer.partitions_for_topic(self.settings.topic) or ()
        elsewhere = [tp for tp in (TopicPartition(self.settings.topic, p) for p in sorted(partitions)) if tp not in owned]
        if not elsewhere:
            return False
        config = self._consumer.config
        bound = (config["session_timeout_ms"] + 2 * config["heartbeat_interval_ms"]) / 1000
        if now - self._assignment_changed_at >= bound:
            return False
        if now < self._next_elsewhere_check:
            return True
        self._next_elsewhere_check = now + self._ELSEWHERE_CHECK_S
        try:
            ends = self._consumer.end_offsets(elsewhere, timeout_ms=2000)
            resume_at = self._group_positions(elsewhere)
        except Exception as exc:  # the broker cannot say now: wait, within the bound
            log.debug("offsets of partitions owned elsewhere: %s", exc)
            return True
        return any(ends[tp] > resume_at[tp] for tp in elsewhere)

    def _group_positions(self, partitions) -> dict:
        """Where the group resumes each partition: its commit, or else the first retained offset."""
        positions = {}
        for tp in partitions:
            committed = self._consumer.committed(tp, timeout_ms=2000)
            positions[tp] = (committed if committed is not None
                             else self._consumer.beginning_offsets([tp], timeout_ms=2000)[tp])
        return positions

    # ------------------------------------------------------------------ prepare

    def _prepare(self, batch: dict) -> PreparedBatch:
        """Parse, score and route one polled batch into its own sink buffers (no I/O)."""
        if self.stats.first_batch_at is None:
            self.stats.first_batch_at = time.monotonic()
        outcome = route_records(chain.from_iterable(batch.values()), self.thresholds,
                                self._model_provider.current, self.settings.model_threshold,
                                datetime.now(timezone.utc))
        prepared = PreparedBatch(
            offsets={tp: records[-1].offset + 1 for tp, records in batch.items()},
            first_offsets={tp: records[0].offset for tp, records in batch.items()},
            es=ElasticsearchSink(self._es, self.settings.es_index),
            archive=ArchiveBatch(outcome.normals),
            dlq=DeadLetterSink(self._producer, self.settings.dlq_topic, ledger=self._dlq_ledger,
                               reader=self._dlq_reader),
            messages=outcome.messages,
            readings=outcome.readings,
            anomalies=outcome.anomalies,
            normals=outcome.normal_count,
            rejected=len(outcome.rejects),
            by_layer=outcome.layers,
        )
        prepared.es.extend(outcome.anomaly_ids, outcome.anomaly_documents, outcome.anomaly_records)
        for record, reason in outcome.rejects:
            _reject(prepared.dlq, record, reason)
        return prepared

    def _take_up(self, prepared: PreparedBatch) -> bool:
        """Before a partition's first batch is written: read back what the DLQ holds for
        its records from here on (from the mark committed with it), and commit a mark now
        if it has none. False when Kafka did not answer: the batch is read again."""
        from kafka import OffsetAndMetadata

        new = [tp for tp in prepared.first_offsets if not self._dlq_ledger.knows(tp.partition)]
        if not new:
            return True
        try:
            end = self._dlq_reader.end()
            committed = {tp: self._consumer.committed(tp, metadata=True, timeout_ms=30_000) for tp in new}
            marks = {tp: decode_mark(c.metadata) if c is not None else None for tp, c in committed.items()}
            # Where to read the DLQ from: the mark, or its beginning when the group reads
            # the partition from before its commit (``--from-beginning``) or without one
            # (a new group: what another group dead-lettered is not sent twice either).
            start = min(0 if marks[tp] is None or prepared.first_offsets[tp] < committed[tp].offset else marks[tp]
                        for tp in new)
            found = self._dlq_reader.read(start, end)
            unmarked = {}
            for tp in new:
                held = self._dlq_ledger.take_up(tp.partition, end, found, from_offset=prepared.first_offsets[tp])
                if held:
                    log.warning("partition %d: the dead-letter topic already holds %d record(s) of it from offset "
                                "%d on; they are not sent again", tp.partition, held, prepared.first_offsets[tp])
                if marks[tp] is None:
                    unmarked[tp] = committed[tp].offset if committed[tp] is not None else prepared.first_offsets[tp]
            if unmarked:
                # A crash before this partition's first commit must find its DLQ records too.
                self._consumer.commit({tp: OffsetAndMetadata(offset, self._dlq_ledger.commit_metadata(tp.partition, offset), -1)
                                       for tp, offset in unmarked.items()})
        except Exception as exc:  # a broker error or a timeout: nothing of the batch is written
            self._dlq_ledger.forget(tp.partition for tp in new)
            log.warning("could not read the dead-letter topic %s back (%s: %s); reading the batch again",
                        self.settings.dlq_topic, type(exc).__name__, exc)
            self._stop.wait(0.5)
            return False
        return True

    # ------------------------------------------------------------------ write and commit

    def _submit(self, prepared: PreparedBatch) -> None:
        """Start writing a batch on the writer thread; it becomes the batch in flight."""
        prepared.future = self._writer.submit(self._write, prepared)
        self._inflight = prepared

    def _write(self, prepared: PreparedBatch) -> None:
        """Make a batch durable: ES and the archive (fsync) at once, then the DLQ (acked).

        The archive is written on its own thread while the bulk request is in flight:
        Elasticsearch's answer is the longest wait of a batch. Both have finished when
        this returns or raises.

        Safe to call again after a failure: each sink resends only what is missing.

        Raises:
            SinkUnavailable: a sink refused for now.
        """
        started = time.monotonic()
        archiving = self._archiver.submit(self._write_archive, prepared.archive)
        try:
            rejected = prepared.es.flush()
        except BaseException:
            archiving.exception()  # waits: no archive write may outlive this attempt
            raise
        indexed = time.monotonic()
        archive_seconds = archiving.result()
        for document in rejected:
            _reject(prepared.dlq, document.key, document.reason, stage="index")
            prepared.index_rejects += 1
        written = time.monotonic()
        prepared.dlq.flush()
        # The time of the attempt that succeeded, sink by sink (for the stats).
        prepared.sink_seconds = [indexed - started, archive_seconds, time.monotonic() - written]

    def _write_archive(self, batch: ArchiveBatch) -> float:
        started = time.monotonic()
        self._archive.write(batch)
        return time.monotonic() - started

    def _complete(self, prepared: PreparedBatch) -> bool:
        """Wait for a batch's write, retrying while a sink is unavailable; then commit it.

        Returns False when the batch was given up (stopping, or its partitions were
        revoked while it could not be written): the caller drops it.
        """
        waited = time.monotonic()
        try:
            prepared.future.result()
            self.stats.wait_s += time.monotonic() - waited
        except SinkUnavailable as exc:
            if not self._retry_write(prepared, exc):
                return False
        if self._paused:
            self._resume()
        # Also after a revocation: the batch is durable, and partitions that came back
        # to this member keep their read position, so only this commit covers it
        # (``_commit`` skips partitions now owned by another member).
        self._commit(prepared.offsets)
        self._account(prepared)
        self._idle_from = time.monotonic()
        return True

    def _retry_write(self, prepared: PreparedBatch, error: SinkUnavailable) -> bool:
        """Retry a failed batch with backoff, paused but still polling; False if dropped."""
        self._pause(str(error))
        delay = 0.5
        while True:
            if self._stop.is_set():
                log.error("stopping with an unwritten batch; its offsets are not committed and will be re-read")
                self._exit_code = 1
                return False
            generation = self._drop_generation
            self._wait_polling(delay, prepared)
            if prepared.revoked or generation != self._drop_generation:
                # Its partitions went away while it could not be written.
                if self._paused:
                    self._resume()
                return False
            delay = min(delay * 2, self.options.max_backoff)
            try:
                self._write(prepared)
                return True
            except SinkUnavailable as exc:
                lag = self._lag_from_broker(prepared)
                log.warning("still unavailable: %s; lag=%s; retrying in %.1fs", exc,
                            "?" if lag is None else lag, delay)

    def _account(self, prepared: PreparedBatch) -> None:
        stats, m = self.stats, self.metrics
        stats.messages += prepared.messages
        stats.readings += prepared.readings
        stats.anomalies += prepared.anomalies - prepared.index_rejects
        stats.normals += prepared.normals
        stats.rejected += prepared.rejected + prepared.index_rejects
        stats.dlq_already_held += prepared.dlq.already_held
        stats.batches += 1
        stats.last_batch_at = time.monotonic()
        stats.index_s += prepared.sink_seconds[0]
        stats.archive_s += prepared.sink_seconds[1]
        stats.dlq_s += prepared.sink_seconds[2]
        m.messages.inc(prepared.messages)
        m.valid.inc(prepared.readings)
        m.rejected.labels("parse").inc(prepared.rejected)
        m.rejected.labels("index").inc(prepared.index_rejects)
        for layers, count in prepared.by_layer.items():
            m.anomalies.labels(layers).inc(count)
        m.normals.inc(prepared.normals)
        m.batch_seconds.observe(time.monotonic() - prepared.started)
        self._update_lag(prepared.offsets)

    def _pause(self, reason: str) -> None:
        self._paused = True
        self.metrics.sink_available.set(0)
        self._consumer.pause(*self._consumer.assignment())
        log.error("sink unavailable, consumption paused, nothing committed: %s", reason)

    def _resume(self) -> None:
        self._paused = False
        self.metrics.sink_available.set(1)
        self._consumer.resume(*self._consumer.assignment())
        log.info("sinks available again: consumption resumed")

    def _wait_polling(self, seconds: float, prepared: PreparedBatch) -> None:
        """Wait while staying in the group: poll paused partitions (returns nothing)."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set() and not prepared.revoked:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._consumer.pause(*self._consumer.assignment())
            stray = self._consumer.poll(timeout_ms=int(min(remaining, 1.0) * 1000))
            for tp, records in stray.items():
                # Only possible for a partition assigned during the wait: read it again later.
                self._consumer.seek(tp, records[0].offset)

    def _commit(self, offsets: dict, *, wait: bool = False) -> None:
        """Commit the offsets of durable batches, for the partitions this member still owns.

        Between batches the commit is asynchronous: the following polls complete it. A
        failed one (typically sent while the group rebalances) is sent again by
        ``_maybe_recommit`` until the coordinator holds every durable offset of the
        partitions this member keeps: the last batch before a pause in the stream has
        no later commit to cover it. ``wait`` makes it synchronous: at exit. (Not in a
        rebalance callback, which runs inside kafka-python's event loop: the
        asynchronous commits sent before it reach the coordinator before the member
        rejoins, in order.)
        """
        from kafka import OffsetAndMetadata
        from kafka.errors import KafkaError

        owned = self._consumer.assignment()
        # The metadata carries the DLQ mark; computed now, it is right whenever it is sent
        # (see ``DeadLetterLedger.commit_metadata``).
        to_commit = {tp: OffsetAndMetadata(offset, self._dlq_ledger.commit_metadata(tp.partition, offset), -1)
                     for tp, offset in offsets.items() if tp in owned}
        if not to_commit:
            return
        self._next_offsets.update({tp: om.offset for tp, om in to_commit.items()})
        if not wait:
            self._commits_in_flight += 1
            self._consumer.commit_async(to_commit, callback=self._on_async_commit)
            return
        try:
            self._consumer.commit(to_commit)
        except KafkaError as exc:
            self._on_commit(to_commit, exc)
        else:
            self._on_commit(to_commit, None)

    def _on_async_commit(self, offsets: dict, response) -> None:
        self._commits_in_flight -= 1
        self._on_commit(offsets, response)

    def _on_commit(self, offsets: dict, response) -> None:
        if isinstance(response, Exception):
            # The data is durable: the offsets are sent again shortly (``_maybe_recommit``);
            # if the partitions go to another member meanwhile, it replays idempotently.
            log.warning("offset commit failed (%s); sending the durable offsets again in %.1fs",
                        type(response).__name__, self._RECOMMIT_DELAY_S)
            self._recommit_at = time.monotonic() + self._RECOMMIT_DELAY_S
            return
        for tp, om in offsets.items():
            self._committed[tp] = max(om.offset, self._committed.get(tp, om.offset))
        self.stats.commits += 1
        self.stats.last_commit_at = time.monotonic()

    def _maybe_recommit(self, now: float) -> None:
        """After a failed commit, once none is in flight: commit what the coordinator lacks."""
        if self._recommit_at is None or now < self._recommit_at or self._commits_in_flight:
            return
        self._recommit_at = None
        behind = {tp: offset for tp, offset in self._next_offsets.items()
                  if offset > self._committed.get(tp, -1)}
        if behind:
            self._commit(behind)

    def _drop(self, *batches: PreparedBatch) -> None:
        """Give batches up uncommitted: partitions still owned go back to the earliest of them."""
        self._drop_generation += 1
        self._archive.forget_all()  # re-read from the files: the truth after a partial write
        targets: dict = {}
        for batch in batches:
            for tp, first_offset in batch.first_offsets.items():
                targets[tp] = min(first_offset, targets.get(tp, first_offset))
        owned = self._consumer.assignment()
        for tp, offset in targets.items():
            if tp in owned:
                self._consumer.seek(tp, offset)
        self._idle_from = time.monotonic()  # what was given up is to be read again

    # ------------------------------------------------------------------ rebalance

    def _on_revoked(self, revoked) -> None:
        revoked = list(revoked)
        self._assignment_changed_at = time.monotonic()
        inflight = self._inflight
        if inflight is not None and any(tp in inflight.offsets for tp in revoked):
            # Let the write finish (it is short) so the next owner finds it in the sinks;
            # its offsets are given up: the next owner replays it idempotently.
            try:
                inflight.future.result(timeout=self._REVOCATION_WAIT_S)
            except Exception as exc:  # not written: dropped below, replayed by the next owner
                log.warning("batch in flight not written before revocation (%s): dropping it", exc)
                self._drop_generation += 1
            inflight.revoked = True
            # The next owner reads the DLQ back before it writes: no dead letter of this
            # batch may land after that (a DLQ flush that timed out leaves sends in flight).
            # Within the rebalance timeout (max.poll.interval, 300 s): 60 s + 125 s at most.
            settled = inflight.future.done() and inflight.dlq.settle_in_flight(
                self._DLQ_DELIVERY_TIMEOUT_MS / 1000 + 5)
            if not settled:
                log.warning("partitions %s revoked while dead letters of a batch were still unacknowledged: "
                            "the next owner may write them again", sorted(tp.partition for tp in revoked))
        self._archive.forget([tp.partition for tp in revoked])
        self._dlq_ledger.forget(tp.partition for tp in revoked)
        for tp in revoked:
            self._next_offsets.pop(tp, None)
            self._committed.pop(tp, None)

    def _on_assigned(self, assigned) -> None:
        assigned = list(assigned)
        log.info("assigned partitions %s", sorted(tp.partition for tp in assigned))
        self._idle_from = self._assignment_changed_at = time.monotonic()
        # A batch completed during the rebalance (after the revocation, before this
        # assignment) recorded offsets of partitions that may now belong to another
        # member: forget them, so no later commit can move that member's offsets back.
        for offsets in (self._next_offsets, self._committed):
            for tp in [tp for tp in offsets if tp not in assigned]:
                del offsets[tp]
        if self.options.from_beginning:
            fresh = [tp for tp in assigned if tp not in self._seen_partitions]
            if fresh:
                self._consumer.seek_to_beginning(*fresh)
        self._seen_partitions.update(assigned)
        if self._paused and assigned:
            self._consumer.pause(*assigned)

    # ------------------------------------------------------------------ reporting

    def _update_lag(self, offsets: dict) -> None:
        lag = 0
        for tp, next_offset in self._next_offsets.items():
            highwater = self._consumer.highwater(tp)
            if highwater is not None:
                lag += max(highwater - next_offset, 0)
        self.metrics.lag.set(lag)

    def _lag_from_broker(self, waiting: PreparedBatch) -> int | None:
        """Messages not yet durable, from the end offsets the broker reports now.

        While a sink is down the partitions are paused, and paused partitions are not
        fetched: the high watermarks ``_update_lag`` reads stand still, and the gauge
        would say the consumer keeps up however much piles up. None if the broker
        cannot say (the gauge keeps its value).
        """
        positions = {**waiting.first_offsets, **self._next_offsets}
        try:
            # A partition with no batch written in this run yet starts from its commit.
            positions.update(self._group_positions(self._consumer.assignment() - positions.keys()))
            ends = self._consumer.end_offsets(list(positions), timeout_ms=2000)
        except Exception as exc:  # an unreachable broker is reported by the consumer itself
            log.debug("end offsets: %s", exc)
            return None
        lag = sum(max(end - positions[tp], 0) for tp, end in ends.items() if end is not None)
        self.metrics.lag.set(lag)
        return lag

    def _report_model(self) -> None:
        model = self._model_provider.current
        if model is None:
            log.warning("no model to serve (%s@%s): rules-only mode", self.settings.model_name, self.settings.model_alias)
            self.metrics.set_model(None, None)
        else:
            log.info("serving model %s version %s", model.name, model.version)
            self.metrics.set_model(model.name, model.version)

    def _log_progress(self) -> None:
        model = self._model_provider.current if self._model_provider else None
        log.info("%s lag=%d model=%s", self.stats.line(), int(self.metrics.lag._value.get()),
                 f"{model.name}/{model.version}" if model else "rules-only")
