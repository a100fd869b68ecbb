"""``bp consume``: the loop that ties the consumer's parts together.

Each polled batch is prepared on this thread (``route_records``: parse, score, route into
its own sink buffers), then written on the writer thread (``BatchWriter``) while the next
one is prepared; once it is durable in every sink, the ``Checkpoint`` commits its
offsets. ``IdleExit`` says when ``--exit-when-idle`` may stop; ``ConsumerStats`` and
``ConsumerMetrics`` count. Per-partition state (patient context) and shadow scoring
plug in at ``_prepare`` (before and after scoring) and at the rebalance callbacks.

A sink that fails for now pauses every partition and retries the same batch with
backoff, polling meanwhile so the member stays in its group; nothing is committed
until the batch is written, so a crash replays from the last commit and the sinks'
idempotence makes the replay harmless. A revocation waits for the batch in flight; a
batch that cannot be written when its partitions go is dropped, uncommitted.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import chain

import orjson

from bp_core import clients
from bp_core.consumer.batch import BatchRouter
from bp_core.consumer.checkpoint import Checkpoint
from bp_core.consumer.idle import IdleExit
from bp_core.consumer.metrics import ConsumerMetrics
from bp_core.consumer.shadow import ShadowScoring
from bp_core.consumer.state import CHANGELOG_CONFIG, PatientContext, changelog_topic
from bp_core.consumer.stats import ConsumerStats, account, lag_from_broker, report_model, update_lag
from bp_core.consumer.writer import BatchWriter, PreparedBatch, Sinks, hand_over
from bp_core.crashpoints import crash_point
from bp_core.dead_letters.ledger import DeadLetterLedger, DeadLetterReader
from bp_core.errors import BPError, SinkUnavailable
from bp_core.rules import Thresholds
from bp_core.settings import Settings
from bp_core.sinks.archive import ArchiveSink
from bp_core.sinks.es_template import ensure_index_template_waiting

log = logging.getLogger("bp_core.consumer")


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


class _Listener(_listener_base()):
    """Rebalance callbacks, run by kafka-python inside ``poll()`` on the service's thread."""

    def __init__(self, service: "ConsumerService") -> None:
        self.service = service

    def on_partitions_revoked(self, revoked):
        self.service._on_revoked(revoked)

    def on_partitions_assigned(self, assigned):
        self.service._on_assigned(assigned)

    def on_partitions_lost(self, lost):
        self.service._on_revoked(lost)


class ConsumerService:
    """The long-running ``bp consume`` process (also run in-process by tests)."""

    REVOCATION_WAIT_S = 60.0           # how long a revocation waits for the batch being written
    DLQ_DELIVERY_TIMEOUT_MS = 120_000  # the DLQ producer's: a send has landed or failed by then
    INFLIGHT_POLL_MS = 20              # poll timeout while a batch is being written
    RETRY_BACKOFF_MS = 20              # kafka-python's retry backoff, also its idle sleep inside poll

    def __init__(self, settings: Settings, options: ConsumerOptions = ConsumerOptions(), *,
                 model_provider=None) -> None:
        self.settings = settings
        self.options = options
        self.router = BatchRouter(Thresholds.from_settings(settings), settings.model_threshold,
                                  alerts_topic=settings.alerts_topic or None)
        self.stats = ConsumerStats()
        self.metrics = ConsumerMetrics()
        self.checkpoint: Checkpoint | None = None   # the parts below are built in _connect
        self.idle: IdleExit | None = None
        self.writer: BatchWriter | None = None
        self._model_provider = model_provider
        self._stop = threading.Event()
        self._paused = False
        self._inflight: PreparedBatch | None = None
        self._drop_generation = 0          # bumped each time batches are dropped
        self._exit_code = 0
        self._seen_partitions: set = set()
        self._topics_ready = False         # the alerts and changelog topics exist (first assignment)
        self._fatal: BPError | None = None  # raised in a rebalance callback: ends the loop after the poll
        self._consumer = self._producer = self._es = self._dlq_reader = self._archive = None
        self._fast_producer = self.sinks = None
        self.context: PatientContext | None = None   # the per-patient state (None: turned off)
        self.shadow: ShadowScoring | None = None     # the challenger's scoring (None: serving a file)
        self._ledger = DeadLetterLedger()

    # ------------------------------------------------------------------ lifecycle

    def stop(self, *_args) -> None:
        """Ask the loop to finish the current batch, commit and return (signal-safe)."""
        self._stop.set()

    def run(self) -> int:
        """Consume until stopped (SIGTERM/SIGINT, ``stop()``) or idle; returns an exit code.

        Raises:
            BPError: Kafka or Elasticsearch refused us at start-up.
        """
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)
        log.info("starting with %s", orjson.dumps(self.settings.describe()).decode())
        self._connect()
        # Every batch allocates tens of thousands of short-lived objects: move the
        # long-lived start-up objects out of the collector's sight.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
        try:
            return self._loop()
        finally:
            self._close()

    def _connect(self) -> None:
        settings = self.settings
        if self.options.metrics_port:
            self.metrics.serve(self.options.metrics_port)
            log.info("metrics on :%d/metrics", self.options.metrics_port)
        self._es = clients.elasticsearch(settings, retries=False)
        ensure_index_template_waiting(self._es, settings, self._stop, self.options.max_backoff)
        self._producer = clients.kafka_producer(
            settings, "bp-consumer-dlq", acks="all", linger_ms=5, max_block_ms=30_000,
            request_timeout_ms=30_000, delivery_timeout_ms=self.DLQ_DELIVERY_TIMEOUT_MS)
        self._consumer = clients.kafka_consumer(
            settings, "bp-consumer", group_id=settings.consumer_group,
            max_poll_records=self.options.batch_size, fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=8 * 1024 * 1024, fetch_min_bytes=1, fetch_max_wait_ms=100,
            # kafka-python sleeps min(poll timeout, retry_backoff_ms) when a poll finds
            # nothing buffered: at the default 100 ms that was the whole p99 latency.
            retry_backoff_ms=self.RETRY_BACKOFF_MS)
        self._dlq_reader = DeadLetterReader(settings.kafka_bootstrap, settings.dlq_topic, settings.topic)
        try:
            self._dlq_reader.end()  # connects now, not inside the first batch
        except Exception as exc:  # not fatal: the first batch asks again, and waits for an answer
            log.warning("could not read the dead-letter topic's end yet: %s: %s", type(exc).__name__, exc)
        self._fast_producer = clients.fast_producer(settings, "bp-consumer-out")
        if settings.patient_context:
            self.context = PatientContext(changelog_topic(settings.consumer_group), lambda: clients.kafka_consumer(
                settings, "bp-consumer-state-restore", max_partition_fetch_bytes=16 * 1024 * 1024,
                fetch_max_bytes=64 * 1024 * 1024))
        self.sinks = Sinks(self._es, settings.es_index, self._producer, settings.dlq_topic, self._ledger,
                           self._dlq_reader, self._fast_producer, settings.alerts_topic or None,
                           self.context.topic if self.context else None)
        self._archive = ArchiveSink(settings.archive_dir, settings.topic)
        self.writer = BatchWriter(self._archive, self.router)
        self.checkpoint = Checkpoint(self._consumer, self._ledger, self._dlq_reader)
        self.idle = IdleExit(self._consumer, settings.topic, self.options.exit_when_idle,
                             self.checkpoint.group_positions)
        self._consumer.subscribe(topics=[settings.topic], listener=_Listener(self))
        if self._model_provider is None:
            from bp_core.model.serving import ModelProvider

            # background: a slow or unreachable registry never holds up a batch
            self._model_provider = ModelProvider(settings, refresh_seconds=self.options.model_refresh,
                                                 background=True)
        self._model_provider.start()
        self._report_model()
        if settings.model_path is None:  # a challenger lives in the registry
            self.shadow = ShadowScoring(settings, refresh_seconds=self.options.model_refresh,
                                        registry=self.metrics.registry)
            self.shadow.start()

    def _ensure_topics(self) -> None:
        """The alerts topic and the state's changelog, with the source topic's partition count.

        Made at the first assignment, when that count is known: the source topic may not
        exist when the consumer starts (the subscription or a producer creates it).

        Raises:
            BPError: Kafka refused a topic.
        """
        from bp_core.provisioning import ensure_topic, partition_count

        settings = self.settings
        # Not the consumer's metadata: a rebalance callback must not block on its client.
        partitions = partition_count(settings, settings.topic)
        if self.router.alerts_on:
            ensure_topic(settings, settings.alerts_topic, partitions=partitions)
        if self.context is not None:
            ensure_topic(settings, self.context.topic, partitions=partitions, config=CHANGELOG_CONFIG)
        self._topics_ready = True

    def _close(self) -> None:
        for closer in (lambda: self.writer and self.writer.close(),
                       lambda: self._model_provider and self._model_provider.close(),
                       lambda: self.shadow and self.shadow.close(),
                       lambda: self._consumer and self._consumer.close(autocommit=False),
                       lambda: self._dlq_reader and self._dlq_reader.close(),
                       lambda: self._producer and self._producer.close(timeout=10),
                       lambda: self._fast_producer and self._fast_producer.flush(10),
                       lambda: self._es and self._es.close()):
            try:
                closer()
            except Exception as exc:  # closing is best effort; everything durable is committed
                log.debug("close: %s", exc)
        # Until the last batch was written: an idle wait before exiting is no work.
        log.info("stopped: %s", self.stats.line(until=self.stats.last_batch_at))
        log.info("time: %s", self.stats.times())

    # ------------------------------------------------------------------ main loop

    def _loop(self) -> int:
        last_progress = time.monotonic()
        while not self._stop.is_set():
            if self._model_provider.maybe_refresh():
                self._report_model()
            if self.shadow is not None:
                self.shadow.refresh()
            generation = self._drop_generation
            polled_at = time.monotonic()
            batch = self._consumer.poll(timeout_ms=self._poll_timeout_ms())
            if self._fatal is not None:
                raise self._fatal
            now = time.monotonic()
            prepared = None
            if batch:
                if self.stats.first_batch_at is not None:  # the first poll waits for the group, not for records
                    self.stats.poll_s += now - polled_at
                prepared = self._prepare(batch)
                self.stats.prepare_s += time.monotonic() - now
            dropped: list[PreparedBatch] = []
            if self._inflight is not None:
                if not self._complete(self._inflight):
                    dropped.append(self._inflight)
                self._inflight = None
            if prepared is not None:
                if dropped or generation != self._drop_generation:
                    dropped.append(prepared)  # read after a batch given up: both are read again
                elif not self.checkpoint.take_up(prepared.first_offsets):
                    dropped.append(prepared)  # the DLQ could not be read back
                    self._stop.wait(0.5)
                else:
                    self.writer.submit(prepared)
                    self._inflight = prepared
            if dropped:
                self._drop(*dropped)
            self.checkpoint.maybe_recommit(now)
            if prepared is None and not dropped and self.idle.due(now, busy=self._inflight is not None):
                log.info("idle for %.0fs: exiting", self.options.exit_when_idle)
                break
            if now - last_progress >= self.options.progress_every:
                last_progress = now
                self._log_progress()
        if self._inflight is not None:
            self._complete(self._inflight)
            self._inflight = None
        self.checkpoint.commit_all()  # settles the asynchronous ones
        self._log_progress()
        return self._exit_code

    def _poll_timeout_ms(self) -> int:
        """Not past the end of the write in flight, whose commit would wait for the next record."""
        if self._inflight is None:
            return self.options.poll_timeout_ms
        if self._inflight.future.done():
            return 0
        return min(self.options.poll_timeout_ms, self.INFLIGHT_POLL_MS)

    def _prepare(self, batch: dict) -> PreparedBatch:
        """Parse, score and route one polled batch into its own sink buffers (no I/O)."""
        if self.stats.first_batch_at is None:
            self.stats.first_batch_at = time.monotonic()
        now = datetime.now(timezone.utc)
        model = self._model_provider.current
        outcome = self.router.route(chain.from_iterable(batch.values()), model, now, self.context)
        if self.shadow is not None:
            self.shadow.score(outcome.scored, model)
        return self.sinks.batch(batch, outcome, now)

    # ------------------------------------------------------------------ complete, retry, drop

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
            self._pause(False)
        crash_point("consumer.before-commit")  # fault tests: every sink written, nothing committed
        # Also after a revocation: partitions that came back keep their read position,
        # so only this commit covers them (the checkpoint skips partitions not owned).
        self.checkpoint.commit(prepared.offsets)
        account(self.stats, self.metrics, prepared)
        update_lag(self.metrics, self._consumer, self.checkpoint.durable)
        if self.context is not None:
            self.metrics.sustained.set(self.context.in_sustained_hypertension)
            self.metrics.patients.set(self.context.patients)
        self.idle.activity()
        return True

    def _retry_write(self, prepared: PreparedBatch, error: SinkUnavailable) -> bool:
        """Retry a failed batch with backoff, paused but still polling; False if dropped."""
        self._pause(True, str(error))
        delay = 0.5
        while True:
            if self._stop.is_set():
                log.error("stopping with an unwritten batch; its offsets are not committed and will be re-read")
                self._exit_code = 1
                return False
            generation = self._drop_generation
            self._wait_polling(delay, prepared)
            if prepared.revoked or generation != self._drop_generation:
                if self._paused:  # its partitions went away while it could not be written
                    self._pause(False)
                return False
            delay = min(delay * 2, self.options.max_backoff)
            try:
                self.writer.write(prepared)
                return True
            except SinkUnavailable as exc:
                lag = lag_from_broker(self.metrics, self._consumer, self.checkpoint, prepared.first_offsets)
                log.warning("still unavailable: %s; lag=%s; retrying in %.1fs", exc,
                            "?" if lag is None else lag, delay)

    def _pause(self, paused: bool, reason: str = "") -> None:
        self._paused = paused
        self.metrics.sink_available.set(0 if paused else 1)
        if paused:
            self._consumer.pause(*self._consumer.assignment())
            log.error("sink unavailable, consumption paused, nothing committed: %s", reason)
        else:
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
        if self.context is not None:  # the given-up batches changed the state: back to the changelog
            self.context.revoked([tp.partition for tp in targets])
        self.idle.activity()  # what was given up is to be read again

    # ------------------------------------------------------------------ rebalance

    def _on_revoked(self, revoked) -> None:
        revoked = list(revoked)
        self.idle.assignment_changed(assigned=False)
        inflight = self._inflight
        if inflight is not None and any(tp in inflight.offsets for tp in revoked):
            # Let the write finish (it is short) so the next owner finds it in the sinks;
            # its offsets are given up. Within the rebalance timeout (300 s): 60 + 125 s.
            written, settled = hand_over(inflight, write_timeout_s=self.REVOCATION_WAIT_S,
                                         settle_timeout_s=self.DLQ_DELIVERY_TIMEOUT_MS / 1000 + 5)
            if not written:
                self._drop_generation += 1  # dropped below, replayed by the next owner
            if not settled:
                log.warning("partitions %s revoked while dead letters of a batch were still unacknowledged: "
                            "the next owner may write them again", sorted(tp.partition for tp in revoked))
        self._archive.forget([tp.partition for tp in revoked])
        self.checkpoint.revoked(revoked)
        if self.context is not None:
            self.context.revoked([tp.partition for tp in revoked])

    def _on_assigned(self, assigned) -> None:
        assigned = list(assigned)
        log.info("assigned partitions %s", sorted(tp.partition for tp in assigned))
        self.idle.assignment_changed(assigned=True)
        self.checkpoint.assigned(assigned)
        if self.options.from_beginning:
            fresh = [tp for tp in assigned if tp not in self._seen_partitions]
            if fresh:
                self._consumer.seek_to_beginning(*fresh)
        self._seen_partitions.update(assigned)
        try:
            if not self._topics_ready:
                self._ensure_topics()
            if self.context is not None:  # before the partitions' first batch is scored
                self.context.assigned([tp.partition for tp in assigned if tp.topic == self.settings.topic])
        except BPError as exc:  # kafka-python would wrap it in a KafkaError: the loop raises it as it is
            self._fatal = exc
        if self._paused and assigned:
            self._consumer.pause(*assigned)

    # ------------------------------------------------------------------ reporting

    def _report_model(self) -> None:
        report_model(self.metrics, self._model_provider.current, self.settings)

    def _log_progress(self) -> None:
        model = self._model_provider.current if self._model_provider else None
        log.info("%s lag=%d model=%s", self.stats.line(), self.metrics.last_lag,
                 f"{model.name}/{model.version}" if model else "rules-only")
