"""The dead-letter sink: rejected messages go to ``<topic>.dlq``, bytes unchanged.

Headers say why and where from, so a DLQ record can be inspected and replayed:

    bp.error.reason      the reason (an InvalidObservation message, or what ES said)
    bp.error.stage       'parse' (not a usable BP Observation) or 'index' (ES refused it)
    bp.source.topic / bp.source.partition / bp.source.offset
    bp.rejected.at       ISO-8601 UTC time of the rejection
    bp.source.null       'true' when the source message had a null value (Kafka refuses a
                         record with neither key nor value, so its DLQ copy carries b'')

With a ``DeadLetterLedger`` (``bp consume``), every record goes to partition 0 and what
the DLQ already holds is not sent again: see ``bp_core.dead_letters.ledger``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import NoReturn

from bp_core.errors import SinkUnavailable
from bp_core.dead_letters.ledger import DLQ_PARTITION, DeadLetterEntry, DeadLetterLedger, DeadLetterReader

MAX_REASON_BYTES = 4096


class DeadLetterSink:
    """Buffers rejected messages; ``flush()`` sends them and waits for the broker's ack."""

    def __init__(self, producer, dlq_topic: str, *, timeout_s: float = 30.0,
                 ledger: DeadLetterLedger | None = None, reader: DeadLetterReader | None = None) -> None:
        self.producer = producer
        self.topic = dlq_topic
        self.timeout_s = timeout_s
        self.ledger = ledger
        self.reader = reader  # reads back what a failed send may have left (with a ledger)
        self._pending: list[tuple[bytes | None, bytes | None, list, DeadLetterEntry]] = []
        self._sending: list[tuple[tuple, object]] = []  # (record, its future), awaiting the outcome
        self.already_held = 0  # records not sent: the DLQ already held them

    def add(self, *, key: bytes | None, value: bytes | None, reason: str, stage: str,
            source_topic: str, partition: int, offset: int) -> None:
        reason_bytes = reason.encode("utf-8", "replace")[:MAX_REASON_BYTES]
        headers = [
            ("bp.error.reason", reason_bytes),
            ("bp.error.stage", stage.encode()),
            ("bp.source.topic", source_topic.encode()),
            ("bp.source.partition", str(partition).encode()),
            ("bp.source.offset", str(offset).encode()),
            ("bp.rejected.at", datetime.now(timezone.utc).isoformat().encode()),
        ]
        if value is None:
            headers.append(("bp.source.null", b"true"))
            value = b""
        self._pending.append((key, value, headers, DeadLetterEntry(partition, offset, stage, reason_bytes)))

    def reject(self, record, reason: str, stage: str = "parse") -> None:
        """Buffer a Kafka record (``key``, ``value``, ``topic``, ``partition``, ``offset``)
        with why it is rejected."""
        self.add(key=record.key, value=record.value, reason=reason, stage=stage,
                 source_topic=record.topic, partition=record.partition, offset=record.offset)

    def flush(self) -> int:
        """Send everything buffered and wait for acks; returns how many were acknowledged.

        A record is never sent again while an earlier send of it may still land: the
        producer retries by itself (a broker restarting, say), so a flush that timed out
        leaves its sends in flight, and the next ``flush()`` waits for their outcome
        first. Only records whose send failed are sent again, and with a ledger only
        those the DLQ does not hold (it is read back first).

        Raises:
            SinkUnavailable: the broker did not acknowledge them all (yet); call
                ``flush()`` again later.
        """
        sent = self._settle() if self._sending else 0
        ledger = self.ledger
        if ledger is not None and self._pending:
            self._read_back()
            kept = [item for item in self._pending if not ledger.already_sent(item[3])]
            self.already_held += len(self._pending) - len(kept)
            self._pending = kept
        if not self._pending:
            return sent
        partition = DLQ_PARTITION if ledger is not None else None
        pending, self._pending = self._pending, []
        for i, item in enumerate(pending):
            key, value, headers, _ = item
            try:
                future = self.producer.send(self.topic, key=key, value=value, headers=headers, partition=partition)
            except Exception as exc:  # refused before it was buffered (no metadata in time): not sent
                self._pending = pending[i:]
                raise SinkUnavailable(f"dead-letter topic {self.topic} refused a send: {type(exc).__name__}: {exc}") from exc
            self._sending.append((item, future))
        return sent + self._settle()

    def settle_in_flight(self, timeout_s: float) -> bool:
        """Wait until no send of this sink is in flight: each has landed or failed for good.

        For a batch given up when its partitions go to another member: the next owner
        reads the DLQ back from the committed mark before it writes, so a send of ours
        that landed after that read would be written twice. False if some are still in
        flight after ``timeout_s`` (the producer's delivery timeout bounds them all).
        """
        from kafka.errors import KafkaTimeoutError

        if not self._sending:
            return True
        try:
            self.producer.flush(timeout=timeout_s)
        except KafkaTimeoutError:
            return False
        return all(future.is_done for _, future in self._sending)

    def _settle(self) -> int:
        """Wait for the sends in flight; record what was acknowledged (and where)."""
        try:
            self.producer.flush(timeout=self.timeout_s)
        except Exception as exc:  # a timeout: the sends stay in flight, settled by the next flush()
            raise SinkUnavailable(f"dead-letter topic {self.topic} did not acknowledge: {type(exc).__name__}: {exc}") from exc
        if not all(future.is_done for _, future in self._sending):
            raise SinkUnavailable(f"dead-letter topic {self.topic} did not acknowledge in {self.timeout_s:.0f}s")
        sending, self._sending = self._sending, []
        acked = [(item, future.value.offset) for item, future in sending if future.succeeded()]
        if self.ledger is not None:
            self.ledger.sent([(item[3], offset) for item, offset in acked])
        failed = [(item, future.exception) for item, future in sending if future.failed()]
        if failed:
            self._pending = [item for item, _ in failed] + self._pending
            self._failed([item for item, _ in failed], failed[0][1])
        return len(acked)

    def _failed(self, items: list, exc: BaseException) -> NoReturn:
        """Some sends failed for good: a failed send may have landed all the same."""
        if self.ledger is not None:
            self.ledger.send_failed({item[3].source_partition for item in items})
        raise SinkUnavailable(f"dead-letter topic {self.topic} did not acknowledge: {type(exc).__name__}: {exc}") from exc

    def _read_back(self) -> None:
        """After a send failed: learn what landed anyway, so it is not sent twice."""
        stale = self.ledger.stale()
        if not stale:
            return
        try:
            start, end = min(stale.values()), self.reader.end()
            found = self.reader.read(start, end)
        except Exception as exc:  # a broker error or a timeout: the batch is retried later
            raise SinkUnavailable(f"dead-letter topic {self.topic} could not be read back after a failed send: "
                                  f"{type(exc).__name__}: {exc}") from exc
        self.ledger.read_back(stale, found)
