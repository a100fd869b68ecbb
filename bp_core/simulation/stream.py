"""Streaming simulated FHIR blood-pressure Observations into Kafka.

``produce`` is the one entry point (``bp produce`` and Airflow's stream DAG call it):
key = patient id (so a patient's readings stay ordered in one partition), value = the
Observation as compact JSON. Payloads are built in vectorised blocks from the cohort
and a pre-serialised template, so the loop is little more than ``producer.send``.

Every send is accounted for: acknowledgements and failures are counted by the send
futures' callbacks, and whatever the broker never answered is counted as failed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Callable, TextIO

from bp_core.errors import BPError

if TYPE_CHECKING:  # pragma: no cover
    from bp_core.simulation.cohort import Cohort
    from bp_core.settings import Settings

# Producer configuration shared with the benchmark's raw baseline.
PRODUCER_CONFIG: dict = {
    "acks": "all",
    "linger_ms": 20,
    "batch_size": 256 * 1024,
    "compression_type": "lz4",
    "max_block_ms": 10_000,          # send() blocks at most this long on a full buffer
    "request_timeout_ms": 10_000,
    "delivery_timeout_ms": 30_000,   # a batch the broker never acknowledges fails after this
    "bootstrap_timeout_ms": 10_000,  # an unreachable broker fails construction after this
}
BLOCK_SIZE = 5_000                   # readings simulated and serialised per vectorised block
_FLUSH_TIMEOUT_S = 40.0              # > delivery timeout: every pending batch resolves first
_MAX_BURST_S = 1.0                   # after a stall, catch up at most this much of the schedule
_PROGRESS_EVERY_S = 0.5


class BrokerUnavailable(BPError):
    """Kafka could not be reached, or stopped answering while we were producing."""


@dataclass(frozen=True)
class ProduceSummary:
    """What a ``produce`` run did: ``sent`` were acknowledged, ``failed`` were not."""

    sent: int
    failed: int
    elapsed_s: float
    interrupted: bool = False
    first_error: str | None = None

    @property
    def rate_per_s(self) -> float:
        """Acknowledged messages per second of the whole run (flush included)."""
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def line(self) -> str:
        """The one-line summary printed at the end of ``bp produce``."""
        text = (f"sent {self.sent}, failed {self.failed}, elapsed {self.elapsed_s:.2f} s, "
                f"rate {self.rate_per_s:.0f} msg/s")
        if self.interrupted:
            text += " (interrupted)"
        if self.first_error:
            text += f"; first error: {self.first_error}"
        return text


def stream_cohort(*, patients: int, seed: int, rate: float | None, start: datetime | None = None) -> Cohort:
    """The cohort a run streams, its clock aligned with the wall clock.

    With a ``rate``, each patient reads every ``patients / rate`` seconds, so simulated
    time advances like real time from ``start`` (default: now); without one, readings
    are the cohort's default 4 hours apart.
    """
    from bp_core.simulation.cohort import DEFAULT_INTERVAL, Cohort

    start = start or datetime.now(timezone.utc).replace(microsecond=0)
    interval = timedelta(seconds=max(patients / rate, 0.001)) if rate else DEFAULT_INTERVAL
    return Cohort(patients, seed, start, interval=interval)


def iter_payloads(cohort: Cohort, *, first: int = 0, limit: int | None = None,
                  block_size: int = BLOCK_SIZE) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) messages of readings ``first, first+1, ...``; endless when ``limit`` is None.

    key = the patient id (UTF-8), value = the FHIR Observation (compact JSON).
    """
    import numpy as np

    from bp_core.fhir.build import device_fragment, observation_bytes

    # Per patient, once: the key and the Observation's device member.
    keys = {pid: pid.encode() for pid in cohort.patient_ids}
    devices: dict[str, bytes] = {}
    produced = 0
    while limit is None or produced < limit:
        n = block_size if limit is None else min(block_size, limit - produced)
        table = cohort.readings_table(n, first=first + produced)
        epoch_ms = table.column("effective").cast("int64").to_numpy()
        whole = bool((epoch_ms % 1000 == 0).all())
        effective = np.datetime_as_string(epoch_ms.astype("datetime64[ms]"), unit="s" if whole else "ms")
        for obs_id, pid, eff, sys_, dia, device_id, model in zip(
                table.column("observation_id").to_pylist(), table.column("patient_id").to_pylist(),
                effective.tolist(), table.column("systolic_mm_hg").to_pylist(),
                table.column("diastolic_mm_hg").to_pylist(), table.column("device_id").to_pylist(),
                table.column("device_model").to_pylist()):
            device = devices.get(pid)
            if device is None:
                device = devices[pid] = device_fragment(device_id, model)
            yield keys[pid], observation_bytes(observation_id=obs_id, patient_id=pid, effective=eff + "+00:00",
                                               systolic_mm_hg=sys_, diastolic_mm_hg=dia, device=device)
        produced += n


def connect(settings: Settings, **overrides):
    """A KafkaProducer with ``PRODUCER_CONFIG`` (plus overrides).

    Raises:
        BrokerUnavailable: no broker answered at ``settings.kafka_bootstrap``.
    """
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    try:
        return KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, client_id="bp-producer",
                             **{**PRODUCER_CONFIG, **overrides})
    except KafkaError as exc:
        raise BrokerUnavailable(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}") from exc


class _Tally:
    """Counts acknowledgements and failures reported by send futures (sender thread)."""

    def __init__(self) -> None:
        self.attempted = 0      # handed to the producer (main thread)
        self.acked = 0
        self.failed = 0
        self.first_error: str | None = None

    def ack(self, _metadata) -> None:
        self.acked += 1

    def fail(self, exc: BaseException) -> None:
        self.failed += 1
        if self.first_error is None:
            self.first_error = f"{type(exc).__name__}: {exc}"


class _Progress:
    """A ``\\r``-updated progress line, at most every half second."""

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream
        self.next_at = 0.0

    def update(self, attempted: int, began: float, now: float, *, force: bool = False) -> None:
        if self.stream is None or (now < self.next_at and not force):
            return
        self.next_at = now + _PROGRESS_EVERY_S
        elapsed = max(now - began, 1e-9)
        self.stream.write(f"\rproducing: {attempted} sent, {attempted / elapsed:,.0f} msg/s   ")
        self.stream.flush()

    def end(self) -> None:
        if self.stream is not None:
            self.stream.write("\n")
            self.stream.flush()


def produce(settings: Settings, *, count: int | None, rate: float | None = None, patients: int = 100,
            seed: int = 0, duration: float | None = None, progress: bool = False,
            start: datetime | None = None, producer_factory: Callable | None = None) -> ProduceSummary:
    """Stream simulated Observations to ``settings.topic`` and wait for their acknowledgement.

    Stops after ``count`` messages or ``duration`` seconds, whichever comes first; with
    neither, runs until interrupted. ``rate`` (msg/s) paces sends on an absolute schedule
    (the long-run rate is exact, no drift); without it, sends as fast as possible.
    Ctrl-C (KeyboardInterrupt) stops sending, then flushes and returns the summary.

    Args:
        progress: write a ``\\r`` progress line to stderr.
        start: first simulated reading time (default: now).
        producer_factory: builds the KafkaProducer (tests); default ``connect``.
    Raises:
        UsageError: a non-positive count, rate, patients or duration.
        BrokerUnavailable: Kafka is unreachable at start, or a send blocked past
            ``max_block_ms`` (broker gone) — the summary is in the message.
    """
    _check_arguments(count=count, rate=rate, patients=patients, duration=duration)
    producer = (producer_factory or connect)(settings)
    cohort = stream_cohort(patients=patients, seed=seed, rate=rate, start=start)
    tally = _Tally()
    meter = _Progress(sys.stderr if progress else None)
    interrupted, send_error = False, None
    began = time.perf_counter()
    try:
        send_error = _send_all(producer, settings.topic, iter_payloads(cohort, limit=count), tally,
                               meter, began=began, rate=rate, duration=duration)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        _flush_and_close(producer)
        meter.update(tally.attempted, began, time.perf_counter(), force=True)
        meter.end()
    elapsed = time.perf_counter() - began
    # Unresolved futures count as failed, never as sent.
    failed = max(tally.attempted, tally.acked + tally.failed) - tally.acked
    summary = ProduceSummary(sent=tally.acked, failed=failed, elapsed_s=elapsed, interrupted=interrupted,
                             first_error=tally.first_error or send_error)
    if send_error is not None:
        raise BrokerUnavailable(f"Kafka at {settings.kafka_bootstrap} stopped accepting messages: "
                                f"{send_error}; {summary.line()}")
    return summary


def _check_arguments(*, count: int | None, rate: float | None, patients: int, duration: float | None) -> None:
    from bp_core.errors import UsageError

    for name, value in (("count", count), ("rate", rate), ("duration", duration)):
        if value is not None and value <= 0:
            raise UsageError(f"{name} must be positive, got {value}")
    if patients < 1:
        raise UsageError(f"patients must be at least 1, got {patients}")


def _send_all(producer, topic: str, payloads: Iterator[tuple[bytes, bytes]], tally: _Tally, meter: _Progress,
              *, began: float, rate: float | None, duration: float | None) -> str | None:
    """The hot loop; counts into ``tally``. Returns the send error that stopped it, if any."""
    from kafka.errors import KafkaError

    send, ack, fail = producer.send, tally.ack, tally.fail
    clock, sleep = time.perf_counter, time.sleep
    deadline = began + duration if duration else None
    schedule_origin = began
    checks_time = rate is not None or deadline is not None or meter.stream is not None
    for key, value in payloads:
        if checks_time:
            now = clock()
            if deadline is not None and now >= deadline:
                break
            if rate is not None:
                # Absolute schedule: message i is due at origin + i/rate, so sleeps never drift.
                due = schedule_origin + tally.attempted / rate
                if due - now > 0.002:
                    sleep(due - now)
                elif now - due > _MAX_BURST_S:
                    schedule_origin = now - tally.attempted / rate
            meter.update(tally.attempted, began, now)
        tally.attempted += 1
        try:
            send(topic, value=value, key=key).add_callback(ack).add_errback(fail)
        except KafkaError as exc:  # buffer full past max_block_ms, or metadata unavailable
            tally.fail(exc)
            return f"{type(exc).__name__}: {exc}"
    return None


def _flush_and_close(producer) -> None:
    """Wait for every pending batch to resolve (delivered or failed), then close."""
    from kafka.errors import KafkaError

    try:
        producer.flush(timeout=_FLUSH_TIMEOUT_S)
    except KafkaError:
        pass  # what was not acknowledged is counted as failed by the caller
    finally:
        producer.close(timeout=5)
