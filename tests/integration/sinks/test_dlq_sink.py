"""The dead-letter sink against a real broker: original bytes, reason and source in headers."""

from __future__ import annotations

import pytest
from kafka import KafkaProducer

from bp_core.errors import SinkUnavailable
from bp_core.sinks.dlq import DeadLetterSink
from tests.integration.helpers import read_all


def test_rejected_bytes_arrive_with_reason_and_source(stack, topic):
    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all")
    sink = DeadLetterSink(producer, f"{topic}.dlq")
    sink.add(key=b"p1", value=b"\x00garbage", reason="not JSON: invalid byte", stage="parse",
             source_topic=topic, partition=2, offset=41)
    sink.add(key=None, value=None, reason="empty message (null value)", stage="parse",
             source_topic=topic, partition=0, offset=7)
    assert sink.flush() == 2
    assert sink.pending() == 0
    producer.close()

    records = sorted(read_all(stack.kafka_bootstrap, f"{topic}.dlq"), key=lambda r: r.offset)
    assert [(r.key, r.value) for r in records] == [(b"p1", b"\x00garbage"), (None, b"")]
    assert dict(records[1].headers)["bp.source.null"] == b"true"
    headers = dict(records[0].headers)
    assert headers["bp.error.reason"] == b"not JSON: invalid byte"
    assert headers["bp.error.stage"] == b"parse"
    assert (headers["bp.source.topic"], headers["bp.source.partition"], headers["bp.source.offset"]) == \
        (topic.encode(), b"2", b"41")
    assert headers["bp.rejected.at"]


def test_unacknowledged_sends_keep_the_buffer(stack, topic):
    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all", max_block_ms=2000)
    sink = DeadLetterSink(producer, "", timeout_s=2)  # an invalid topic name: the send fails
    sink.add(key=None, value=b"x", reason="r", stage="parse", source_topic=topic, partition=0, offset=0)
    with pytest.raises(SinkUnavailable):
        sink.flush()
    assert sink.pending() == 1
    producer.close(timeout=2)
