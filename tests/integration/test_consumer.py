"""The consumer against the real stack: routing, exactly-once in effect, failures survived.

Each test has its own topic (3 partitions), DLQ, group, index and archive folder.
"""

from __future__ import annotations

import random
import re
import signal
import threading
import time
from collections import Counter

import pytest

from bp_core.consumer.service import ConsumerOptions, ConsumerService
from bp_core.sinks.archive import read_archive
from tests.integration.helpers import (
    TcpProxy, committed_total, dumps, es_count, observation, read_all, send, start_consumer, wait_for,
)

NORMAL = (118, 76)
HIGH = (165, 100)
LOW = (85, 55)


def make_stream(n: int, seed: int = 1, malformed_every: int = 0, prefix: str = "o"):
    """n messages: a mix of normal and anomalous Observations (+ malformed ones).

    Each of the 40 patients reads steadily high, low or normal, so a reading's route is
    the same whether or not it is judged against its patient's history (no rise or drop
    from a baseline). Returns (messages, expected) where expected maps
    'anomaly'/'normal'/'dlq' to ids (for dlq: the message index).
    """
    rng = random.Random(seed)
    messages, expected = [], {"anomaly": set(), "normal": set(), "dlq": set()}
    for i in range(n):
        number = rng.randrange(40)
        patient = f"pat-{number}"
        if malformed_every and i % malformed_every == malformed_every - 1:
            messages.append((patient.encode(), rng.choice([b"not json", b'{"resourceType": "Patient"}', b"[]"])))
            expected["dlq"].add(i)
            continue
        systolic, diastolic = HIGH if number % 7 == 0 else LOW if number % 7 == 1 else NORMAL
        obs_id = f"{prefix}-{i}"
        messages.append((patient.encode(), dumps(observation(obs_id, patient, systolic, diastolic))))
        expected["normal" if (systolic, diastolic) == NORMAL else "anomaly"].add(obs_id)
    return messages, expected


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape(port: int, required: str) -> dict | None:
    """Prometheus text format -> {metric name: value} (labels summed), once ``required`` > 0."""
    import urllib.request

    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return None
    values: dict = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            name = name.split("{", 1)[0]
            values[name] = values.get(name, 0.0) + float(value)
    return values if values.get(required, 0) > 0 else None


def es_ids(es, index) -> Counter:
    es.indices.refresh(index=index)
    ids = Counter()
    resp = es.search(index=index, size=10_000, query={"match_all": {}}, source=["observation_id"], scroll="1m")
    while resp["hits"]["hits"]:
        ids.update(h["_source"]["observation_id"] for h in resp["hits"]["hits"])
        resp = es.scroll(scroll_id=resp["_scroll_id"], scroll="1m")
    return ids


def archive_ids(settings) -> Counter:
    return Counter(r["observation_id"] for r in read_archive(settings.archive_dir, settings.topic))


def run_in_process(settings, **options) -> ConsumerService:
    service = ConsumerService(settings, ConsumerOptions(exit_when_idle=2.0, **options))
    assert service.run() == 0
    return service


def test_mixed_input_lands_exactly_where_it_should(settings, es):
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": observation("b-1", "pat-b", *NORMAL)},
        {"resource": observation("b-2", "pat-b", *HIGH)},
        {"resource": {"resourceType": "Patient", "id": "pat-b"}},
    ]}
    half_bad_bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": observation("hb-1", "pat-c", *LOW)},
        {"resource": {**observation("hb-2", "pat-c", *NORMAL), "status": "cancelled"}},
    ]}
    missing_diastolic = observation("md-1", "pat-d", *NORMAL)
    missing_diastolic["component"] = missing_diastolic["component"][:1]
    messages = [
        (b"pat-a", dumps(observation("a-1", "pat-a", *NORMAL))),
        (b"pat-a", dumps(observation("a-2", "pat-a", *HIGH))),
        (b"pat-a", dumps(observation("a-3", "pat-a", *LOW))),
        (b"pat-b", dumps(bundle)),
        (b"pat-c", dumps(half_bad_bundle)),
        (b"pat-d", dumps(missing_diastolic)),
        (b"pat-e", b"\xff\xfe not utf-8"),
        (b"pat-e", b'{"resourceType": "Observation", "id": "x", "status": "final"'),
        (b"pat-e", dumps({"resourceType": "Patient", "id": "pat-e"})),
        (b"pat-e", None),
    ]
    send(settings.kafka_bootstrap, settings.topic, messages)

    service = run_in_process(settings)

    docs = {h["_source"]["observation_id"]: h for h in es.search(index=settings.es_index, size=100)["hits"]["hits"]} \
        if es.indices.refresh(index=settings.es_index) else {}
    assert {oid: hit["_id"] for oid, hit in docs.items()} == {
        "a-2": "Patient/pat-a/Observation/a-2", "a-3": "Patient/pat-a/Observation/a-3",
        "b-2": "Patient/pat-b/Observation/b-2", "hb-1": "Patient/pat-c/Observation/hb-1"}
    docs = {oid: hit["_source"] for oid, hit in docs.items()}
    high = docs["a-2"]
    assert high["patient_id"] == "pat-a" and high["systolic"] == 165 and high["diastolic"] == 100
    assert high["category"] == "hypertension_stage_2"
    assert high["anomaly_types"] == ["systolic_high", "diastolic_high"]
    assert high["rule_anomaly"] is True and high["detected_by"] == ["rules"]
    assert high["model_probability"] is None and high["model_version"] is None  # rules-only: no champion
    assert high["@timestamp"].startswith("2026-03-01T08:30:00") and high["ingested_at"]
    assert docs["a-3"]["category"] == "hypotension"
    assert docs["a-3"]["anomaly_types"] == ["systolic_low", "diastolic_low"]
    assert not any({"name", "patient_name", "given", "family"} & set(doc) for doc in docs.values())

    assert archive_ids(settings) == Counter({"a-1": 1, "b-1": 1})

    dlq = read_all(settings.kafka_bootstrap, settings.dlq_topic)
    assert len(dlq) == 6
    source = {(m.partition, m.offset): m for m in read_all(settings.kafka_bootstrap, settings.topic)}
    for record in dlq:
        headers = dict(record.headers)
        position = (int(headers["bp.source.partition"]), int(headers["bp.source.offset"]))
        assert headers["bp.source.topic"].decode() == settings.topic
        assert headers["bp.error.reason"]
        assert record.value == (source[position].value or b"")  # the original bytes
        assert record.key == source[position].key
    reasons = sorted(dict(r.headers)["bp.error.reason"].decode() for r in dlq)
    assert any("cancelled" in r for r in reasons)
    assert any("diastolic" in r for r in reasons)
    assert service.stats.messages == len(messages)
    assert committed_total(settings.kafka_bootstrap, settings.consumer_group, settings.topic) == len(messages)


def dlq_sources(settings) -> Counter:
    """(source partition, source offset, stage) of every DLQ record, with repeats."""
    return Counter((int(h["bp.source.partition"]), int(h["bp.source.offset"]), h["bp.error.stage"].decode())
                   for h in (dict(r.headers) for r in read_all(settings.kafka_bootstrap, settings.dlq_topic)))


def malformed_positions(settings) -> Counter:
    return Counter((r.partition, r.offset, "parse") for r in read_all(settings.kafka_bootstrap, settings.topic)
                   if r.value in (b"not json", b'{"resourceType": "Patient"}', b"[]"))


def test_replay_from_beginning_duplicates_nothing(settings, es):
    messages, expected = make_stream(600, seed=3, malformed_every=31)
    send(settings.kafka_bootstrap, settings.topic, messages)
    run_in_process(settings)
    run_in_process(settings, from_beginning=True)
    assert es_ids(es, settings.es_index) == Counter(expected["anomaly"])
    assert archive_ids(settings) == Counter(expected["normal"])
    assert dlq_sources(settings) == malformed_positions(settings), "each malformed message once in the DLQ"
    assert sum(malformed_positions(settings).values()) == len(expected["dlq"])


@pytest.mark.parametrize("commits", [0, 2])
def test_dead_letters_written_before_a_crash_are_not_sent_again(settings, es, caplog, tmp_path, commits):
    """Every sink written, the process killed (SIGKILL) before the commit: the next consumer
    re-reads the batch and finds its dead letters already in the DLQ (also before any commit)."""
    messages, expected = make_stream(3000, seed=17, malformed_every=25)
    send(settings.kafka_bootstrap, settings.topic, messages)
    log_path = tmp_path / "consumer.log"
    doomed = start_consumer(settings, "--batch-size", "400", log_path=log_path,
                            BP_CRASH_AT=f"consumer.before-commit:{commits + 1}")
    assert doomed.wait(timeout=120) == -signal.SIGKILL, log_path.read_text()[-3000:]
    assert sum(dlq_sources(settings).values()) > 0  # its last batch was dead-lettered, not committed
    caplog.clear()

    service = run_in_process(settings)

    assert service.stats.dlq_already_held > 0
    assert "the dead-letter topic already holds" in caplog.text
    assert dlq_sources(settings) == malformed_positions(settings), "each malformed message once in the DLQ"
    assert sum(malformed_positions(settings).values()) == len(expected["dlq"])
    assert es_ids(es, settings.es_index) == Counter(expected["anomaly"])
    assert archive_ids(settings) == Counter(expected["normal"])
    assert committed_total(settings.kafka_bootstrap, settings.consumer_group, settings.topic) == len(messages)


def test_kill_9_repeatedly_mid_stream_loses_and_duplicates_nothing(settings, es, tmp_path):
    messages, expected = make_stream(20_000, seed=11, malformed_every=97)
    log_path = tmp_path / "consumer.log"

    def produce():
        for start in range(0, len(messages), 1000):
            send(settings.kafka_bootstrap, settings.topic, messages[start:start + 1000])
            time.sleep(0.2)

    producer = threading.Thread(target=produce)
    producer.start()
    rng = random.Random(5)
    kills = 0
    for _ in range(5):
        proc = start_consumer(settings, "--batch-size", "500", log_path=log_path)
        time.sleep(rng.uniform(2.0, 4.0))
        proc.kill()  # SIGKILL: no flush, no commit, no goodbye
        proc.wait()
        kills += 1
    producer.join()
    final = start_consumer(settings, "--exit-when-idle", "4", log_path=log_path)
    assert final.wait(timeout=300) == 0, log_path.read_text()[-3000:]

    assert kills == 5
    es_counts = es_ids(es, settings.es_index)
    assert es_counts == Counter(expected["anomaly"]), "every anomaly exactly once in Elasticsearch"
    assert archive_ids(settings) == Counter(expected["normal"]), "every normal exactly once in the archive"
    assert dlq_sources(settings) == malformed_positions(settings), "every malformed message once in the DLQ"
    assert sum(malformed_positions(settings).values()) == len(expected["dlq"])
    assert committed_total(settings.kafka_bootstrap, settings.consumer_group, settings.topic) == len(messages)


def test_elasticsearch_outage_pauses_and_loses_nothing(settings, es, tmp_path):
    host, port = settings.es_url.split("://")[1].split(":")
    proxy = TcpProxy(host, int(port))
    proxied = settings.with_(es_url=f"http://127.0.0.1:{proxy.port}")
    first, expected_first = make_stream(3000, seed=21, prefix="before")
    during, expected_during = make_stream(3000, seed=22, prefix="during")
    log_path = tmp_path / "consumer.log"
    try:
        send(settings.kafka_bootstrap, settings.topic, first)
        proc = start_consumer(proxied, "--exit-when-idle", "6", "--batch-size", "500", log_path=log_path)
        wait_for(lambda: es_count(es, settings.es_index) > 0, timeout=60, what="first documents")
        proxy.cut()
        send(settings.kafka_bootstrap, settings.topic, during)
        # Retries back off 0.5, 1, 2, 4 s: four of them outlast --exit-when-idle (6 s).
        wait_for(lambda: log_path.read_text().count("still unavailable") >= 4 or proc.poll() is not None,
                 timeout=60, what="four retries")
        assert proc.poll() is None, "the consumer must wait for Elasticsearch, not exit"
        proxy.restore()
        assert proc.wait(timeout=180) == 0, log_path.read_text()[-3000:]
    finally:
        proxy.close()
    log = log_path.read_text()
    assert "consumption paused" in log and "resumed" in log
    # Paused partitions are not fetched; the lag reported while waiting comes from the
    # broker, so it counts the 3,000 messages sent during the outage (and any unread before).
    waiting = [int(n) for n in re.findall(r"still unavailable: .*; lag=(\d+);", log)]
    assert waiting and 3000 <= max(waiting) <= 6000, waiting
    assert es_ids(es, settings.es_index) == Counter(expected_first["anomaly"] | expected_during["anomaly"])
    assert archive_ids(settings) == Counter(expected_first["normal"] | expected_during["normal"])
    assert committed_total(settings.kafka_bootstrap, settings.consumer_group, settings.topic) == 6000


def test_sigterm_finishes_the_batch_commits_and_exits_0(settings, es, tmp_path):
    messages, expected = make_stream(4000, seed=31)
    send(settings.kafka_bootstrap, settings.topic, messages)
    log_path = tmp_path / "consumer.log"
    port = free_port()
    proc = start_consumer(settings, "--batch-size", "200", "--metrics-port", str(port), log_path=log_path)
    wait_for(lambda: "assigned partitions" in log_path.read_text(), timeout=60, what="assignment")
    metrics = wait_for(lambda: scrape(port, "bp_messages_consumed_total"), timeout=30, what="metrics")
    assert metrics["bp_messages_consumed_total"] > 0
    assert metrics["bp_sinks_available"] == 1
    assert "bp_consumer_lag" in metrics and "bp_batch_seconds_count" in metrics
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, log_path.read_text()[-3000:]
    committed = committed_total(settings.kafka_bootstrap, settings.consumer_group, settings.topic)
    written = sum(es_ids(es, settings.es_index).values()) + sum(archive_ids(settings).values())
    assert committed == written  # everything committed is written, and nothing written is uncommitted


def consumed_by(log_path) -> int:
    """The messages a ``bp consume`` process says, at exit, it made durable."""
    return int(re.search(r"stopped: messages=(\d+)", log_path.read_text()).group(1))


def test_two_consumers_share_partitions_without_duplicates(settings, es, tmp_path):
    messages, expected = make_stream(9000, seed=41)
    logs = [tmp_path / "c1.log", tmp_path / "c2.log"]
    first = start_consumer(settings, "--exit-when-idle", "8", "--batch-size", "300", log_path=logs[0])
    wait_for(lambda: "assigned partitions" in logs[0].read_text(), timeout=60, what="first member")
    second = start_consumer(settings, "--exit-when-idle", "8", "--batch-size", "300", log_path=logs[1])
    # Both in the group before the stream starts: each gets partitions of its own.
    wait_for(lambda: re.search(r"assigned partitions \[\d", logs[1].read_text()), timeout=60, what="second member")
    for start in range(0, len(messages), 1500):
        send(settings.kafka_bootstrap, settings.topic, messages[start:start + 1500])
        time.sleep(0.5)
    assert first.wait(timeout=180) == 0
    assert second.wait(timeout=180) == 0
    assert all(consumed_by(log) > 0 for log in logs), "both members processed messages"
    assert es_ids(es, settings.es_index) == Counter(expected["anomaly"])
    assert archive_ids(settings) == Counter(expected["normal"])


def test_a_promoted_model_scores_the_following_documents(settings, es, tmp_path):
    from mlflow import MlflowClient

    from bp_core.simulation.datasets import generate_dataset
    from bp_core.model.promotion import promote
    from bp_core.model.training import train_and_register

    first = train_and_register(settings, generate_dataset(tmp_path / "d1", patients=40, readings=4000, seed=1), seed=1)
    promote(settings, holdout_readings=4000)
    log_path = tmp_path / "consumer.log"
    proc = start_consumer(settings, "--model-refresh", "1", log_path=log_path)
    try:
        before = [(f"pat-{i}".encode(), dumps(observation(f"before-{i}", f"pat-{i}", *HIGH))) for i in range(50)]
        send(settings.kafka_bootstrap, settings.topic, before)
        wait_for(lambda: es_count(es, settings.es_index) == 50, timeout=90, what="first documents")
        second = train_and_register(settings, generate_dataset(tmp_path / "d2", patients=40, readings=4000, seed=2), seed=2)
        # Move the alias directly: this test is about the swap, not the promotion gate.
        MlflowClient(settings.mlflow_tracking_uri).set_registered_model_alias(
            settings.model_name, settings.model_alias, second.model_version)
        wait_for(lambda: f"version {second.model_version}" in log_path.read_text(), timeout=60, what="model swap")
        after = [(f"pat-{i}".encode(), dumps(observation(f"after-{i}", f"pat-{i}", *HIGH))) for i in range(50)]
        send(settings.kafka_bootstrap, settings.topic, after)
        wait_for(lambda: es_count(es, settings.es_index) == 100, timeout=60, what="second documents")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log_path.read_text()[-3000:]
    es.indices.refresh(index=settings.es_index)
    hits = es.search(index=settings.es_index, size=200)["hits"]["hits"]
    versions = {h["_source"]["observation_id"].split("-")[0]: set() for h in hits}
    for h in hits:
        versions[h["_source"]["observation_id"].split("-")[0]].add(h["_source"]["model_version"])
        assert h["_source"]["model_name"] == settings.model_name
        assert 0.0 <= h["_source"]["model_probability"] <= 1.0
    assert versions == {"before": {first.model_version}, "after": {second.model_version}}


def test_an_index_name_elasticsearch_refuses_stops_the_consumer_with_its_reason(settings, tmp_path):
    # A 400 is no outage: retrying "until Elasticsearch is ready" would wait forever.
    log_path = tmp_path / "consumer.log"
    proc = start_consumer(settings, "--exit-when-idle", "5", log_path=log_path, BP_ES_INDEX="BP-Anomalies")
    assert proc.wait(timeout=60) == 1
    output = log_path.read_text()
    assert "refused index 'BP-Anomalies'" in output and "lower cased" in output, output[-2000:]
    assert "not ready" not in output and "Traceback" not in output
