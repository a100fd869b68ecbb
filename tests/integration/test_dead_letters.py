"""`bp dlq show` and `bp dlq replay` against the real stack.

The replay sends each dead letter back exactly once in effect: killed with SIGKILL between
its sends and the commit that covers them (at an exact step, or at random moments), the
next replay finds what was sent and goes on from there.
"""

from __future__ import annotations

import random
import time
from collections import Counter

import orjson

from bp_core.cli import main
from bp_core.dead_letters.replay import DeadLetterReplay
from bp_core.sinks.archive import read_archive
from tests.integration.helpers import BP, REPO, bp_env, dumps, observation, read_all, send, wait_for

HIGH = (165, 100)
NORMAL = (118, 76)


def fill_dlq(settings, n: int) -> list:
    """n dead letters written by the consumer's own sink; returns the DLQ's records."""
    from kafka import KafkaProducer

    from bp_core.sinks.dlq import DeadLetterSink

    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5)
    sink = DeadLetterSink(producer, settings.dlq_topic)
    for i in range(n):
        value = None if i == 5 else (b'{\n  "resourceType": "Observation",\n  "n": %d\n}' % i if i % 2 else b"junk %d" % i)
        sink.add(key=f"pat-{i % 13}".encode(), value=value, reason=f"not JSON: case {i}", stage="parse",
                 source_topic=settings.topic, partition=i % 3, offset=i // 3)
        if i % 500 == 499:
            sink.flush()
    sink.flush()
    producer.close()
    return read_all(settings.kafka_bootstrap, settings.dlq_topic)


def replayed(settings) -> tuple[Counter, list]:
    """How many times each DLQ offset was replayed into the topic, and the replayed records."""
    records = [r for r in read_all(settings.kafka_bootstrap, settings.topic)
               if any(name == "bp.replay.of" for name, _ in r.headers)]
    counts = Counter(int(dict(r.headers)["bp.replay.of"].decode().rsplit(":", 1)[1]) for r in records)
    return counts, records


def assert_each_replayed_once(settings, dlq_records) -> None:
    counts, records = replayed(settings)
    assert counts == Counter(r.offset for r in dlq_records), "every dead letter replayed exactly once"
    by_offset = {r.offset: r for r in dlq_records}
    for record in records:
        original = by_offset[int(dict(record.headers)["bp.replay.of"].decode().rsplit(":", 1)[1])]
        null = dict(original.headers).get("bp.source.null") == b"true"
        assert record.key == original.key
        assert record.value == (None if null else original.value), "the original bytes, multi-line JSON too"


def replay_killed_at_commit(settings, *, chunk: int, commit: int) -> None:
    """A replay in its own process, killed with SIGKILL (a crash point) when it is about to
    make its ``commit``-th commit: the chunk before it sent, not committed."""
    import signal
    import subprocess
    import sys

    code = ("from bp_core.settings import Settings\n"
            "from bp_core.dead_letters.replay import DeadLetterReplay\n"
            f"DeadLetterReplay(Settings.from_env(), group={settings.consumer_group!r}, chunk={chunk}).run()\n")
    env = bp_env(settings, BP_CRASH_AT=f"dlq-replay.before-commit:{commit}")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]


def test_an_interrupted_replay_is_taken_up_and_sends_each_dead_letter_once(settings):
    dlq = fill_dlq(settings, 600)

    # Killed after its second chunk's sends (commits: the mark before any send, chunk 1, then chunk 2's).
    replay_killed_at_commit(settings, chunk=100, commit=3)
    counts, _ = replayed(settings)
    assert sum(counts.values()) == 200 and max(counts.values()) == 1  # chunk 2 landed, uncommitted
    # Killed again: its first chunk (100-159) all found in the topic, so its commit at 160
    # keeps the first replay's mark (160-199 lie ahead); it sends 200-219, then dies.
    replay_killed_at_commit(settings, chunk=60, commit=3)
    counts, _ = replayed(settings)
    assert sum(counts.values()) == 220 and max(counts.values()) == 1, "nothing of 100-199 sent again"

    third = DeadLetterReplay(settings, group=settings.consumer_group, chunk=100).run()

    assert third.already > 0 and third.found_in_topic_scan > 0
    assert third.unsendable == 0 and third.passed_over == 0
    assert_each_replayed_once(settings, dlq)
    again = DeadLetterReplay(settings, group=settings.consumer_group).run()
    assert (again.read, again.sent, again.found_in_topic_scan) == (0, 0, 0)  # clean mark: nothing to look for
    assert again.positions == {0: len(dlq)}


def topic_size(settings) -> int:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(settings.topic, p) for p in consumer.partitions_for_topic(settings.topic)]
        return sum(consumer.end_offsets(partitions).values())
    finally:
        consumer.close()


def test_a_replay_killed_9_times_still_sends_each_dead_letter_once(settings, tmp_path):
    import subprocess

    dlq = fill_dlq(settings, 20_000)
    env = bp_env(settings)
    log_path = tmp_path / "replay.log"
    rng = random.Random(9)
    with open(log_path, "ab") as log:
        for _ in range(3):
            before = topic_size(settings)
            proc = subprocess.Popen([BP, "dlq", "replay", "--group", settings.consumer_group], env=env,
                                    stdout=log, stderr=log, cwd=REPO)
            # Mid-replay: once it has sent something of its own (or finished, on a fast machine).
            wait_for(lambda: topic_size(settings) > before or proc.poll() is not None, timeout=60,
                     interval=0.05, what="the replay's first sends")
            time.sleep(rng.uniform(0.0, 0.4))
            proc.kill()  # SIGKILL: no flush, no commit, no goodbye
            proc.wait()
        final = subprocess.run([BP, "dlq", "replay", "--group", settings.consumer_group], env=env,
                               capture_output=True, text=True, cwd=REPO, timeout=300)
    assert final.returncode == 0, final.stderr[-2000:]
    assert_each_replayed_once(settings, dlq)


def use(monkeypatch, settings) -> None:
    for name, value in bp_env(settings).items():
        if name.startswith(("BP_", "MLFLOW_")):
            monkeypatch.setenv(name, value)


def consume(settings) -> None:
    from bp_core.consumer.service import ConsumerOptions, ConsumerService

    assert ConsumerService(settings, ConsumerOptions(exit_when_idle=2.0)).run() == 0


def test_fix_the_cause_then_replay_each_lands_once(settings, es, monkeypatch, capsys):
    """Elasticsearch refuses every anomaly (an index created with a conflicting mapping);
    the index is fixed, the 'index' dead letters replayed, and a consumer indexes them."""
    es.indices.create(index=settings.es_index, mappings={"properties": {"category": {"type": "long"}}})
    pretty = orjson.dumps(observation("pretty-1", "pat-p", *HIGH), option=orjson.OPT_INDENT_2)
    assert pretty.count(b"\n") > 20
    messages = [(b"pat-p", pretty)]
    anomalies, normals = {"pretty-1"}, set()
    for i in range(60):  # each patient reads steadily high or normal: no rise or drop from a baseline
        systolic, diastolic = HIGH if i % 5 < 2 else NORMAL
        messages.append((f"pat-{i % 5}".encode(), dumps(observation(f"o-{i}", f"pat-{i % 5}", systolic, diastolic))))
        (anomalies if i % 5 < 2 else normals).add(f"o-{i}")
    garbage = [b"not json", dumps({"resourceType": "Patient", "name": [{"family": "Dupont", "given": ["Jeanne"]}]})]
    messages += [(b"pat-x", value) for value in garbage]
    send(settings.kafka_bootstrap, settings.topic, messages)
    consume(settings)
    assert not es.count(index=settings.es_index)["count"]
    use(monkeypatch, settings)
    capsys.readouterr()

    assert main(["dlq", "show"]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith(f"{settings.dlq_topic}: {len(anomalies) + 2} dead letters\n")
    assert f"{len(anomalies):>7}  index  elasticsearch: document_parsing_exception" in shown
    assert "parse  not JSON" in shown and "parse  not an Observation" in shown
    assert "Dupont" not in shown and "Jeanne" not in shown, "contents are never printed"

    es.indices.delete(index=settings.es_index)  # the fix: the consumer recreates it from its template
    assert main(["dlq", "replay", "--stage", "index", "--dry-run"]) == 0
    assert f"would replay {len(anomalies)} (index {len(anomalies)})" in capsys.readouterr().out
    assert main(["dlq", "replay", "--stage", "index"]) == 0
    out = capsys.readouterr().out
    assert f"replayed {len(anomalies)} (index {len(anomalies)})" in out
    assert "passed over 2 not matching the filters" in out
    consume(settings)

    es.indices.refresh(index=settings.es_index)
    hits = es.search(index=settings.es_index, size=100, source=["observation_id"])["hits"]["hits"]
    assert Counter(h["_source"]["observation_id"] for h in hits) == Counter(anomalies)
    archived = Counter(r["observation_id"] for r in read_archive(settings.archive_dir, settings.topic))
    assert archived == Counter(normals), "replayed anomalies do not touch the archive"
    assert len(read_all(settings.kafka_bootstrap, settings.dlq_topic)) == len(anomalies) + 2  # none rejected again
    assert main(["dlq", "replay"]) == 0
    assert "read 0 dead letters, replayed 0" in capsys.readouterr().out  # the group is past them all
