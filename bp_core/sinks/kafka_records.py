"""A sink of Kafka records sent with librdkafka's producer, acknowledged before a commit.

The alerts topic and the patient-state changelog are written this way: ``add`` buffers a
record, ``flush`` sends every record not yet acknowledged and waits for the broker's
acknowledgements (acks=all). A record whose send failed is sent again by the next
``flush``; one acknowledged is never sent again by this sink. Delivery is at least once:
a crash between the acknowledgement and the offset commit sends the batch again, with
the same keys and deterministic ids, so a reader keeps the last record per key (the
changelog is compacted) or per resource id (alerts).
"""

from __future__ import annotations

from bp_core.errors import SinkUnavailable


_UNSENT, _IN_FLIGHT, _ACKED = 0, 1, 2


class KafkaRecordSink:
    """Buffers (topic, partition or None, key, value) records; ``flush`` sends and waits."""

    def __init__(self, producer, name: str, *, timeout_s: float = 30.0) -> None:
        self.producer = producer
        self.name = name               # for messages: 'alerts', 'patient-state changelog'
        self.timeout_s = timeout_s
        self._records: list[tuple] = []
        self._state: list[int] = []
        self._error: object = None

    def add(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None) -> None:
        self._records.append((topic, partition, key, value))
        self._state.append(_UNSENT)

    def __len__(self) -> int:
        return len(self._records)

    def flush(self) -> int:
        """Send what is neither acknowledged nor in flight, and wait for every outcome;
        returns how many were sent. A record still in flight after a timed-out flush is
        not sent again: its outcome is awaited first.

        Raises:
            SinkUnavailable: some records were not acknowledged in time; ``flush`` again later.
        """
        from confluent_kafka import KafkaException

        if _IN_FLIGHT in self._state:
            self.producer.flush(self.timeout_s)  # the outcome of an earlier attempt's sends
        self._error = None
        sent = 0
        for i, (topic, partition, key, value) in enumerate(self._records):
            if self._state[i] != _UNSENT:
                continue
            kwargs = {"key": key, "value": value, "on_delivery": self._on_delivery(i)}
            if partition is not None:
                kwargs["partition"] = partition
            while True:
                try:
                    self.producer.produce(topic, **kwargs)
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    self.producer.poll(0.05)
                except KafkaException as exc:
                    raise SinkUnavailable(f"{self.name}: cannot send to {topic}: {exc}") from exc
            self._state[i] = _IN_FLIGHT
            sent += 1
        self.producer.flush(self.timeout_s)
        missing = len(self._state) - self._state.count(_ACKED)
        if missing:
            raise SinkUnavailable(f"{self.name}: {missing} record(s) not acknowledged"
                                  + (f" ({self._error})" if self._error else f" in {self.timeout_s:.0f}s"))
        return sent

    def _on_delivery(self, index: int):
        def delivered(error, _message) -> None:
            if error is None:
                self._state[index] = _ACKED
            else:  # failed for good: sent again by the next flush
                self._error = error
                self._state[index] = _UNSENT
        return delivered
