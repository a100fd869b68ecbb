"""The local stack is real: Kafka round-trips messages, Elasticsearch indexes and searches."""

from __future__ import annotations

from kafka import KafkaConsumer, KafkaProducer, TopicPartition


def test_kafka_round_trip_keeps_per_key_order(stack, topic):
    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all")
    sent = [(f"patient-{i % 5}".encode(), f"reading-{i}".encode()) for i in range(200)]
    for key, value in sent:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()

    consumer = KafkaConsumer(
        bootstrap_servers=stack.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=10_000,
    )
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
    assert len(partitions) == 3
    consumer.assign(partitions)
    received = [(m.key, m.value, m.partition) for m in consumer]
    consumer.close()

    assert sorted((k, v) for k, v, _ in received) == sorted(sent)
    # One key, one partition, in the order sent.
    for key in {k for k, _ in sent}:
        assert len({p for k, _, p in received if k == key}) == 1
        assert [v for k, v, _ in received if k == key] == [v for k, v in sent if k == key]


def test_elasticsearch_indexes_and_searches(es, es_index):
    info = es.nodes.info(node_id="_local", filter_path="nodes.*.version")
    (version,) = [node["version"] for node in info["nodes"].values()]
    assert version.startswith("9.")

    docs = [{"patient_id": f"p{i % 3}", "systolic": 100 + i} for i in range(30)]
    operations = []
    for i, doc in enumerate(docs):
        operations += [{"index": {"_index": es_index, "_id": f"obs-{i}"}}, doc]
    result = es.bulk(operations=operations, refresh="wait_for")
    assert not result["errors"]

    hits = es.search(index=es_index, query={"range": {"systolic": {"gt": 120}}}, size=100)
    assert hits["hits"]["total"]["value"] == 9
    by_patient = es.search(index=es_index, size=0, aggs={"p": {"terms": {"field": "patient_id.keyword"}}})
    assert {b["key"]: b["doc_count"] for b in by_patient["aggregations"]["p"]["buckets"]} == {"p0": 10, "p1": 10, "p2": 10}
