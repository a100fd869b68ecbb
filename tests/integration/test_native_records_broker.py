"""The C record decoder against a real broker: what a plain kafka-python consumer reads,
a consumer with ``use_native_records`` reads too, field for field and offset for offset."""

from __future__ import annotations

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from bp_core.consumer.native_records import use_native_records


def read_topic(bootstrap: str, topic: str, *, native: bool) -> list[tuple]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
                             consumer_timeout_ms=3000, max_poll_records=333)
    if native:
        assert use_native_records(consumer)
    consumer.assign([TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)])
    records = [(r.partition, r.offset, r.timestamp, r.timestamp_type, r.key, r.value, r.headers, r.leader_epoch)
               for r in consumer]
    positions = {tp.partition: consumer.position(tp) for tp in consumer.assignment()}
    consumer.close()
    return records, positions


def test_native_and_python_decoders_read_the_same_records(stack, topic):
    sent = 0
    for codec in ("lz4", "zstd", "gzip", None):
        producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all", linger_ms=20,
                                 compression_type=codec, batch_size=64 * 1024)
        for i in range(1500):
            producer.send(topic, key=None if i % 10 == 0 else f"pat-{i % 17}".encode(),
                          value=None if i % 97 == 5 and i % 10 else f'{{"id":"obs-{codec}-{i}","é":{i}}}'.encode(),
                          headers=[("trace", f"{codec}-{i}".encode())] if i % 3 == 0 else None)
        producer.flush()
        producer.close()
        sent += 1500
    python, python_positions = read_topic(stack.kafka_bootstrap, topic, native=False)
    native, native_positions = read_topic(stack.kafka_bootstrap, topic, native=True)
    assert len(python) == sent
    assert sorted(native) == sorted(python)
    assert native_positions == python_positions and sum(native_positions.values()) == sent
