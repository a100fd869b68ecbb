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
    assert sink.flush() == 0  # nothing left to send
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
    sink.topic = f"{topic}.dlq"  # the cause fixed: the same sink sends what it kept, once
    assert sink.flush() == 1
    producer.close(timeout=2)
    assert len(read_all(stack.kafka_bootstrap, f"{topic}.dlq")) == 1


def _ledgered_sink(stack, topic, ledger=None):
    from bp_core.dead_letters.ledger import DeadLetterLedger, DeadLetterReader

    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all")
    reader = DeadLetterReader(stack.kafka_bootstrap, f"{topic}.dlq", topic, timeout_s=10)
    return DeadLetterSink(producer, f"{topic}.dlq", ledger=ledger or DeadLetterLedger(), reader=reader)


def _add(sink, topic, offsets, stage="parse", reason="r"):
    for offset in offsets:
        sink.add(key=None, value=b"bad %d" % offset, reason=reason, stage=stage, source_topic=topic,
                 partition=1, offset=offset)


def test_a_send_that_failed_but_landed_is_read_back_and_not_sent_again(stack, topic):
    sink = _ledgered_sink(stack, topic)
    sink.ledger.take_up(1, dlq_end=sink.reader.end())
    _add(sink, topic, [3, 4])
    assert sink.flush() == 2
    # As if the acks had been lost: the records are in the DLQ, the ledger does not know.
    fresh = _ledgered_sink(stack, topic)
    fresh.ledger.take_up(1, dlq_end=0)
    fresh.ledger.send_failed([1])
    _add(fresh, topic, [3, 4, 5])
    # Two documents of one Bundle that Elasticsearch refused: two records, by their reasons.
    _add(fresh, topic, [4], stage="index", reason="elasticsearch refused document b-1: …")
    _add(fresh, topic, [4], stage="index", reason="elasticsearch refused document b-2: …")
    assert fresh.flush() == 3               # 5 (parse) and 4 (index, twice): 3 and 4 (parse) are there
    assert fresh.already_held == 2
    records = read_all(stack.kafka_bootstrap, f"{topic}.dlq")
    positions = sorted((dict(r.headers)["bp.source.offset"], dict(r.headers)["bp.error.stage"]) for r in records)
    assert positions == [(b"3", b"parse"), (b"4", b"index"), (b"4", b"index"), (b"4", b"parse"), (b"5", b"parse")]
    assert {r.partition for r in records} == {0}
    for s in (sink, fresh):
        s.producer.close()
        s.reader.close()


def test_a_new_owner_reads_back_from_the_committed_mark(stack, topic):
    from bp_core.dead_letters.ledger import DeadLetterLedger, decode_mark

    first = _ledgered_sink(stack, topic)
    first.ledger.take_up(1, dlq_end=first.reader.end())
    _add(first, topic, [0, 1])
    first.flush()
    metadata = first.ledger.commit_metadata(1, 2)  # offsets 0-1 committed with this mark
    _add(first, topic, [7])
    first.flush()                                  # written, then the process dies: 7 is not committed
    start, end = decode_mark(metadata), first.reader.end()
    assert (start, end) == (2, 3)
    successor = DeadLetterLedger()
    assert successor.take_up(1, end, first.reader.read(start, end)) == 1
    again = _ledgered_sink(stack, topic, ledger=successor)
    _add(again, topic, [7, 8])
    assert again.flush() == 1
    assert len(read_all(stack.kafka_bootstrap, f"{topic}.dlq")) == 4
    for s in (first, again):
        s.producer.close()
        s.reader.close()
