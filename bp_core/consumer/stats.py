"""The consumer's running totals (progress log, summary at exit) and its lag."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from bp_core.consumer.metrics import ConsumerMetrics

log = logging.getLogger("bp_core.consumer")


@dataclass
class ConsumerStats:
    """Totals of the batches made durable; times in seconds, from the first batch on."""

    messages: int = 0
    readings: int = 0
    anomalies: int = 0
    normals: int = 0
    rejected: int = 0
    dlq_already_held: int = 0             # rejects not sent: the DLQ held them (sent before a crash, say)
    batches: int = 0
    started: float = field(default_factory=time.monotonic)
    first_batch_at: float | None = None   # monotonic time the first batch arrived
    last_batch_at: float | None = None    # monotonic time the last batch was durable and its commit sent
    # This thread: polling Kafka, preparing batches (parse, score, route), waiting for the
    # writer; the writer threads: each sink (the archive's time overlaps Elasticsearch's).
    poll_s: float = 0.0
    prepare_s: float = 0.0
    wait_s: float = 0.0
    index_s: float = 0.0
    archive_s: float = 0.0
    alerts_s: float = 0.0
    state_s: float = 0.0
    dlq_s: float = 0.0
    status_changes: int = 0

    def line(self, until: float | None = None) -> str:
        """The totals on one line; the rate counts from the first batch (not from start-up:
        imports, group join) until ``until`` (monotonic time; None: now)."""
        end = time.monotonic() if until is None else until
        elapsed = max(end - (self.first_batch_at or self.started), 1e-9)
        return (f"messages={self.messages} readings={self.readings} anomalies={self.anomalies} "
                f"normals={self.normals} rejected={self.rejected} rate={self.messages / elapsed:.0f}/s"
                + (f" dlq_already_held={self.dlq_already_held}" if self.dlq_already_held else ""))

    def times(self) -> str:
        """Where the time went, on one line (seconds)."""
        return (f"poll={self.poll_s:.2f}s prepare={self.prepare_s:.2f}s wait={self.wait_s:.2f}s "
                f"elasticsearch={self.index_s:.2f}s archive={self.archive_s:.2f}s alerts={self.alerts_s:.2f}s "
                f"state={self.state_s:.2f}s dlq={self.dlq_s:.2f}s")


def account(stats: ConsumerStats, metrics: ConsumerMetrics, batch) -> None:
    """Add a durable batch (a ``bp_core.consumer.writer.PreparedBatch``) to the totals."""
    stats.messages += batch.messages
    stats.readings += batch.readings
    stats.anomalies += batch.anomalies - batch.index_rejects
    stats.normals += batch.normals
    stats.rejected += batch.rejected + batch.index_rejects
    stats.dlq_already_held += batch.dlq.already_held
    stats.batches += 1
    stats.last_batch_at = time.monotonic()
    seconds = batch.sink_seconds
    stats.index_s += seconds.get("elasticsearch", 0.0)
    stats.archive_s += seconds.get("archive", 0.0)
    stats.alerts_s += seconds.get("alerts", 0.0)
    stats.state_s += seconds.get("state", 0.0)
    stats.status_changes += len(batch.status_changes)
    for change in batch.status_changes:
        metrics.status_changes.labels(change.change).inc()
    if batch.alerts is not None:
        metrics.alerts.inc(len(batch.alerts))
    stats.dlq_s += seconds.get("dlq", 0.0)
    metrics.messages.inc(batch.messages)
    metrics.valid.inc(batch.readings)
    metrics.rejected.labels("parse").inc(batch.rejected)
    metrics.rejected.labels("index").inc(batch.index_rejects)
    for layers, count in batch.by_layer.items():
        metrics.anomalies.labels(layers).inc(count)
    metrics.normals.inc(batch.normals)
    metrics.batch_seconds.observe(time.monotonic() - batch.started)


def update_lag(metrics: ConsumerMetrics, consumer, durable: dict) -> None:
    """Lag from the high watermarks the consumer's fetches saw (cheap, between batches)."""
    lag = 0
    for tp, next_offset in durable.items():
        highwater = consumer.highwater(tp)
        if highwater is not None:
            lag += max(highwater - next_offset, 0)
    metrics.set_lag(lag)


def lag_from_broker(metrics: ConsumerMetrics, consumer, checkpoint, waiting: dict) -> int | None:
    """Messages not yet durable, from the end offsets the broker reports now.

    While a sink is down the partitions are paused and not fetched: the high watermarks
    ``update_lag`` reads stand still. ``waiting`` holds the first offsets of the batch that
    waits to be written; a partition with no batch written in this run starts from its
    commit. None if the broker cannot say (the gauge keeps its value).
    """
    positions = {**waiting, **checkpoint.durable}
    try:
        positions.update(checkpoint.group_positions(consumer.assignment() - positions.keys()))
        ends = consumer.end_offsets(list(positions), timeout_ms=2000)
    except Exception as exc:  # an unreachable broker is reported by the consumer itself
        log.debug("end offsets: %s", exc)
        return None
    lag = sum(max(end - positions[tp], 0) for tp, end in ends.items() if end is not None)
    metrics.set_lag(lag)
    return lag


def report_model(metrics: ConsumerMetrics, model, settings) -> None:
    """Log and expose the model now served (None: rules only)."""
    if model is None:
        log.warning("no model to serve (%s@%s): rules-only mode", settings.model_name, settings.model_alias)
        metrics.set_model(None, None)
    else:
        log.info("serving model %s version %s", model.name, model.version)
        metrics.set_model(model.name, model.version)
