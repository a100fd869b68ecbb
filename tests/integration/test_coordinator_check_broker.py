"""``check_coordinator_in_place`` against the real broker: a consumer in a group reads and
commits a topic as before, and once it has joined, its polls no longer hand the
coordinator check to kafka-python's network thread (a plain consumer does, every poll)."""

from __future__ import annotations

from kafka import KafkaConsumer

from bp_core.consumer.coordinator_check import check_coordinator_in_place
from tests.integration.helpers import committed_total, send

MESSAGES = 3000


def consume_in_group(bootstrap: str, topic: str, group: str, *, check: bool) -> tuple[int, int]:
    """Read the topic whole in a new group and commit; returns (records read, coordinator
    checks run on the network thread after the first records)."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                             auto_offset_reset="earliest", max_poll_records=100)
    if check:
        assert check_coordinator_in_place(consumer)
    net = consumer._coordinator._net
    run = net.run
    round_trips = []
    net.run = lambda coro, *args: (round_trips.append(getattr(coro, "__name__", "")), run(coro, *args))[1]
    offsets, after_first = set(), None
    for _ in range(2000):
        for records in consumer.poll(timeout_ms=500).values():
            if after_first is None:
                after_first = len(round_trips)
            offsets.update((record.partition, record.offset) for record in records)
        if len(offsets) == MESSAGES:
            break
    consumer.commit()
    consumer.close()
    return len(offsets), round_trips[after_first:].count("ensure_coordinator_ready_async")


def test_a_joined_consumer_checks_its_coordinator_in_place(stack, topic, group):
    send(stack.kafka_bootstrap, topic, [(f"p{i % 7}".encode(), f"m{i}".encode()) for i in range(MESSAGES)])

    read, plain_checks = consume_in_group(stack.kafka_bootstrap, topic, f"{group}-plain", check=False)
    assert read == MESSAGES and committed_total(stack.kafka_bootstrap, f"{group}-plain", topic) == MESSAGES
    assert plain_checks >= MESSAGES // 100 // 2, plain_checks  # the round trip this removes: about one per poll

    read, checks = consume_in_group(stack.kafka_bootstrap, topic, f"{group}-checked", check=True)
    assert read == MESSAGES and committed_total(stack.kafka_bootstrap, f"{group}-checked", topic) == MESSAGES
    assert checks == 0
