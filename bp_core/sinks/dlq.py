"""The dead-letter sink: rejected messages go to ``<topic>.dlq``, bytes unchanged.

Headers say why and where from, so a DLQ record can be inspected and replayed:

    bp.error.reason      the reason (an InvalidObservation message, or what ES said)
    bp.error.stage       'parse' (not a usable BP Observation) or 'index' (ES refused it)
    bp.source.topic / bp.source.partition / bp.source.offset
    bp.rejected.at       ISO-8601 UTC time of the rejection
    bp.source.null       'true' when the source message had a null value (Kafka refuses a
                         record with neither key nor value, so its DLQ copy carries b'')
"""

from __future__ import annotations

from datetime import datetime, timezone

from bp_core.errors import SinkUnavailable

MAX_REASON_BYTES = 4096


class DeadLetterSink:
    """Buffers rejected messages; ``flush()`` sends them and waits for the broker's ack."""

    def __init__(self, producer, dlq_topic: str, *, timeout_s: float = 30.0) -> None:
        self.producer = producer
        self.topic = dlq_topic
        self.timeout_s = timeout_s
        self._pending: list[tuple[bytes | None, bytes | None, list]] = []

    def add(self, *, key: bytes | None, value: bytes | None, reason: str, stage: str,
            source_topic: str, partition: int, offset: int) -> None:
        headers = [
            ("bp.error.reason", reason.encode("utf-8", "replace")[:MAX_REASON_BYTES]),
            ("bp.error.stage", stage.encode()),
            ("bp.source.topic", source_topic.encode()),
            ("bp.source.partition", str(partition).encode()),
            ("bp.source.offset", str(offset).encode()),
            ("bp.rejected.at", datetime.now(timezone.utc).isoformat().encode()),
        ]
        if value is None:
            headers.append(("bp.source.null", b"true"))
            value = b""
        self._pending.append((key, value, headers))

    def pending(self) -> int:
        return len(self._pending)

    def clear(self) -> None:
        self._pending = []

    def flush(self) -> int:
        """Send everything buffered and wait for acks; returns how many were sent.

        Raises:
            SinkUnavailable: the broker did not acknowledge them all; the buffer is kept
                and the next ``flush()`` sends it again (a DLQ copy may then appear
                twice, which is harmless for a dead-letter topic; offsets stay behind).
        """
        if not self._pending:
            return 0
        try:
            futures = [self.producer.send(self.topic, key=key, value=value, headers=headers)
                       for key, value, headers in self._pending]
            self.producer.flush(timeout=self.timeout_s)
            for future in futures:
                future.get(timeout=self.timeout_s)
        except Exception as exc:  # kafka-python raises KafkaError subclasses and timeouts
            raise SinkUnavailable(f"dead-letter topic {self.topic} did not acknowledge: {type(exc).__name__}: {exc}") from exc
        sent, self._pending = len(self._pending), []
        return sent
