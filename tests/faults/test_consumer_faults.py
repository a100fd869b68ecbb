"""The consumer under real faults, on the fault suite's own stack (19092 / 19200).

Each test of a stream ends with exact counts in every sink (see
``_support.assert_exact``): Elasticsearch ids, archive observation ids, DLQ source
positions, committed offsets. The last two tests stall the broker while dead letters
are in flight; they are in this module so that no broker restart of its other tests
(one worker runs a module's tests one after the other) overlaps the stall.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections import Counter
from concurrent.futures import Future

import orjson

import pytest
from kafka import KafkaProducer, TopicPartition

from bp_core.errors import SinkUnavailable
from bp_core.sinks.dlq import DeadLetterSink
from tests.faults._support import (
    MALFORMED, PAUSE_LOG, archive_ids, assert_exact, committed, dlq_positions, es_ids, kill_quietly, log_text,
    make_stream, make_two_streams, produce_chunks, rules_only, start, terminate, wait_committed,
)
from tests.faults.conftest import KafkaStall, stack_sh
from tests.integration.helpers import es_count, read_all, send, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.integration]


@pytest.mark.timeout(420)
def test_kill_9_at_random_moments_during_a_50k_stream(settings, es, tmp_path):
    messages, expected = make_stream(50_000, seed=101, malformed_every=113, prefix="k")
    log_path = tmp_path / "consumer.log"
    env = rules_only(tmp_path)
    producer = threading.Thread(target=produce_chunks, args=(settings, messages, 5000, 0.3))
    producer.start()
    rng = random.Random(2026)
    kills, commits_seen = 0, []
    try:
        for round_number in range(7):
            proc = start(settings, "--batch-size", "1000", log_path=log_path, **env)
            if round_number == 0:
                # The first one must get going, up to its first commit (start-up time varies
                # with the machine's load: on a slow one, a consumer killed seconds after it
                # joined may not have committed yet); later ones are killed at random
                # moments, joining or consuming.
                wait_for(lambda: committed(settings) > 0 or proc.poll() is not None,
                         timeout=90, what="the first consumer's first commit")
            time.sleep(rng.uniform(1.5, 3.0))
            assert proc.poll() is None, log_text(log_path)[-3000:]
            proc.kill()  # SIGKILL: no flush, no commit, no goodbye
            proc.wait()
            kills += 1
            commits_seen.append(committed(settings))
    finally:
        producer.join()
    final = start(settings, "--exit-when-idle", "4", log_path=log_path, **env)
    assert final.wait(timeout=180) == 0, log_text(log_path)[-3000:]

    assert kills == 7
    assert commits_seen[-1] > 0, f"the killed consumers made progress: {commits_seen}"
    assert_exact(settings, es, expected, len(messages))


@pytest.mark.timeout(300)
def test_elasticsearch_stopped_30s_mid_stream(settings, es, tmp_path):
    before, during, expected = make_two_streams(4000, (201, 202), ("before", "during"), malformed_every=101)
    log_path = tmp_path / "consumer.log"
    send(settings.kafka_bootstrap, settings.topic, before)
    proc = start(settings, "--batch-size", "500", log_path=log_path, **rules_only(tmp_path))
    es_down = False
    try:
        wait_committed(settings, len(before), timeout=60, proc=proc, log_path=log_path)
        es_down = True
        stack_sh("stop", "elasticsearch")
        stopped_at = time.monotonic()
        send(settings.kafka_bootstrap, settings.topic, during)
        wait_for(lambda: PAUSE_LOG in log_text(log_path), timeout=30, what="the pause log")
        paused_at = committed(settings)
        time.sleep(max(0.0, 30 - (time.monotonic() - stopped_at)))
        assert proc.poll() is None, "the consumer must wait for Elasticsearch, not exit"
        assert committed(settings) == paused_at, "nothing is committed while Elasticsearch is down"
        assert paused_at < len(before) + len(during)
        stack_sh("start", "elasticsearch")
        es_down = False
        wait_committed(settings, len(before) + len(during), timeout=120, proc=proc, log_path=log_path)
        terminate(proc, log_path)
    finally:
        kill_quietly(proc)
        if es_down:
            stack_sh("start", "elasticsearch", check=False)
    log = log_text(log_path)
    assert "consumption resumed" in log
    assert_exact(settings, es, expected, len(before) + len(during))


def _send_until_acked(settings, messages, stop_after: float = 240) -> dict:
    """Produce every message, resending only those whose send failed (broker away).

    Returns {'attempts': n, 'resent': n}. A send counts as done only when acked.
    """
    from kafka import KafkaProducer

    pending, stats, deadline = list(messages), {"attempts": 0, "resent": 0}, time.monotonic() + stop_after
    while pending:
        assert time.monotonic() < deadline, f"{len(pending)} messages never acknowledged"
        stats["attempts"] += 1
        failed = []
        try:
            producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5,
                                     request_timeout_ms=5000, max_block_ms=5000, retries=0)
        except Exception:
            time.sleep(1)
            continue
        try:
            futures = []
            for message in pending:
                try:
                    futures.append((message, producer.send(settings.topic, key=message[0], value=message[1])))
                except Exception:
                    failed.append(message)
            try:
                producer.flush(timeout=15)
            except Exception:  # unresolved futures fail below and are resent
                pass
            for message, future in futures:
                try:
                    future.get(timeout=10)
                except Exception:
                    failed.append(message)
        finally:
            try:
                producer.close(timeout=2)
            except Exception:
                pass
        stats["resent"] += len(failed)
        pending = failed
        if pending:
            time.sleep(1)
    return stats


@pytest.mark.timeout(300)
def test_kafka_broker_restarted_mid_stream(settings, es, tmp_path):
    messages, expected = make_stream(12_000, seed=301, malformed_every=89, prefix="kr")
    log_path = tmp_path / "consumer.log"
    proc = start(settings, "--batch-size", "500", log_path=log_path, **rules_only(tmp_path))
    kafka_down = False
    try:
        send(settings.kafka_bootstrap, settings.topic, messages[:4000])
        wait_for(lambda: committed(settings) > 0, timeout=60, what="first commits")
        stats: dict = {}

        def sender_main():
            try:
                stats.update(_send_until_acked(settings, messages[4000:]))
            except BaseException as exc:  # surfaced by the assertion below, not lost in a thread
                stats["error"] = repr(exc)
        sender = threading.Thread(target=sender_main)
        sender.start()
        time.sleep(0.5)
        kafka_down = True
        stack_sh("stop", "kafka")
        time.sleep(5)
        assert proc.poll() is None, "the consumer must survive the broker going away:\n" + log_text(log_path)[-3000:]
        stack_sh("start", "kafka")
        kafka_down = False
        sender.join(timeout=240)
        assert not sender.is_alive() and "error" not in stats, stats
        # A resend after an acknowledgement lost with the broker can store a message
        # twice (two records, two offsets): the topic, not the send list, is the truth.
        records = read_all(settings.kafka_bootstrap, settings.topic)
        wait_committed(settings, len(records), timeout=120, proc=proc, log_path=log_path)
        terminate(proc, log_path)
    finally:
        kill_quietly(proc)
        if kafka_down:
            stack_sh("start", "kafka", check=False)
    print(f"producer side: {stats}; topic records: {len(records)} for {len(messages)} messages")
    assert sum(r.value in MALFORMED for r in records) >= len(expected["dlq"]), "every malformed message is in the topic"
    stored = Counter(orjson.loads(r.value)["id"] for r in records if r.value not in MALFORMED)
    assert set(stored) == expected["anomaly"] | expected["normal"]
    assert es_ids(es, settings.es_index) == Counter(expected["anomaly"]), "ES: each anomaly exactly once"
    # The archive holds one line per Kafka record of a normal reading: exactly once per record.
    assert archive_ids(settings) == Counter({i: stored[i] for i in expected["normal"]})
    assert dlq_positions(settings) == Counter((r.partition, r.offset) for r in records if r.value in MALFORMED)
    assert committed(settings) == len(records)


@pytest.mark.timeout(240)
def test_second_member_joins_and_leaves_mid_stream(settings, es, tmp_path):
    messages, expected = make_stream(15_000, seed=401, malformed_every=97, prefix="rb")
    logs = [tmp_path / "c1.log", tmp_path / "c2.log"]
    env = rules_only(tmp_path)
    first = start(settings, "--batch-size", "300", log_path=logs[0], **env)
    second = None
    try:
        wait_for(lambda: "assigned partitions" in log_text(logs[0]), timeout=60, what="first member")
        producer = threading.Thread(target=produce_chunks, args=(settings, messages, 1000, 0.5))
        producer.start()
        wait_for(lambda: committed(settings) > 0, timeout=60, what="the first member's first commits")
        second = start(settings, "--batch-size", "300", log_path=logs[1], **env)
        # The second member consumes for a while: its progress line counts messages.
        wait_for(lambda: re.search(r"INFO bp_core.consumer: messages=[1-9]", log_text(logs[1])), timeout=60,
                 what="the second member's progress")
        terminate(second, logs[1])  # SIGTERM: finish the batch, commit, leave the group
        producer.join()
        # First: every outcome durable in its sink ...
        wait_for(lambda: sink_totals(settings, es) == (len(expected["anomaly"]), len(expected["normal"])),
                 timeout=120, what="every reading in its sink")
        # ... then every offset committed, also the last batch of a partition whose
        # asynchronous commit failed because the group was rebalancing (it is sent again).
        wait_committed(settings, len(messages), timeout=20, proc=first, log_path=logs[0])
        terminate(first, logs[0])
    finally:
        kill_quietly(first)
        kill_quietly(second)
    for log in logs:  # both members processed messages
        assert int(re.search(r"stopped: messages=(\d+)", log_text(log)).group(1)) > 0, log_text(log)[-2000:]
    assert_exact(settings, es, expected, len(messages))


def sink_totals(settings, es) -> tuple[int, int]:
    from tests.faults._support import archive_ids

    return es_count(es, settings.es_index), sum(archive_ids(settings).values())


def _no_dac_override() -> tuple[str, ...]:
    """Run as root without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH: permission bits then apply.

    (Running as the unprivileged ``bpstack`` user is not possible here: the venv's
    interpreter lives under /root, mode 0700.)
    """
    caps = "-dac_override,-dac_read_search"
    return ("setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", "--")


@pytest.mark.timeout(240)
def test_archive_unwritable_pauses_then_resumes(settings, es, tmp_path):
    first, second, expected = make_two_streams(3000, (501, 502), ("a1", "a2"), malformed_every=101)
    log_path = tmp_path / "consumer.log"
    topic_dir = settings.archive_dir / settings.topic
    send(settings.kafka_bootstrap, settings.topic, first)
    proc = start(settings, "--batch-size", "500", log_path=log_path, prefix=_no_dac_override(),
                 **rules_only(tmp_path))
    try:
        wait_committed(settings, len(first), timeout=60, proc=proc, log_path=log_path)
        assert topic_dir.is_dir()
        topic_dir.chmod(0o000)  # every partition folder below is now out of reach
        send(settings.kafka_bootstrap, settings.topic, second)
        wait_for(lambda: PAUSE_LOG in log_text(log_path), timeout=30, what="the pause log")
        stuck = committed(settings)
        time.sleep(6)
        assert proc.poll() is None, "the consumer must wait for the archive, not exit"
        assert committed(settings) == stuck, "committed offsets must stop growing"
        assert stuck < len(first) + len(second)
        topic_dir.chmod(0o755)
        wait_committed(settings, len(first) + len(second), timeout=90, proc=proc, log_path=log_path)
        terminate(proc, log_path)
    finally:
        topic_dir.chmod(0o755)
        kill_quietly(proc)
    assert "consumption resumed" in log_text(log_path)
    assert_exact(settings, es, expected, len(first) + len(second))


@pytest.mark.timeout(180)
def test_archive_unwritable_when_a_consumer_starts(settings, es, tmp_path):
    """A consumer (re)started while the archive is out of reach must pause, not crash.

    This is the state after a restart or a rebalance: the archive sink opens a
    partition's folder on its first reading, inside ``add()``.
    """
    first, second, expected = make_two_streams(1000, (601, 602), ("s1", "s2"))
    log_path = tmp_path / "consumer.log"
    topic_dir = settings.archive_dir / settings.topic
    env = rules_only(tmp_path)
    send(settings.kafka_bootstrap, settings.topic, first)
    proc = start(settings, "--batch-size", "500", log_path=log_path, prefix=_no_dac_override(), **env)
    try:
        wait_committed(settings, len(first), timeout=60, proc=proc, log_path=log_path)
        terminate(proc, log_path)
        topic_dir.chmod(0o000)
        send(settings.kafka_bootstrap, settings.topic, second)
        proc = start(settings, "--batch-size", "500", log_path=log_path, prefix=_no_dac_override(), **env)
        wait_for(lambda: log_text(log_path).count("assigned partitions") >= 2, timeout=60, what="restart")
        time.sleep(5)
        assert proc.poll() is None, "the consumer crashed on an unreadable archive:\n" + log_text(log_path)[-2500:]
        assert committed(settings) == len(first)
        topic_dir.chmod(0o755)
        wait_committed(settings, len(first) + len(second), timeout=60, proc=proc, log_path=log_path)
        terminate(proc, log_path)
    finally:
        topic_dir.chmod(0o755)
        kill_quietly(proc)
    assert_exact(settings, es, expected, len(first) + len(second))


# --------------------------------------------------------------------------- dead letters in flight
#
# A DLQ flush that times out leaves its sends in flight: the producer retries them by
# itself and they may land later. Nothing may then write them twice, neither the next
# flush nor the next owner of a revoked partition. The broker is stopped (SIGSTOP) while
# the sends are made, so they cannot be acknowledged in time on any machine; a flush
# that merely waits too little for a live broker is not a timeout one can count on (on a
# fast machine the acknowledgements arrive while the flush waits for the GIL).

SENDS = 2000


def _dead_letters(sink: DeadLetterSink, topic: str, partition: int) -> None:
    for offset in range(SENDS):
        sink.add(key=b"pat-1", value=b"x" * 200, reason="not JSON", stage="parse",
                 source_topic=topic, partition=partition, offset=offset)


def _producer(settings) -> KafkaProducer:
    """A producer that already holds the DLQ's metadata: a send during the stall is
    buffered and sent, not blocked waiting for the broker to say where it goes."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    assert producer.partitions_for(settings.dlq_topic)
    return producer


def test_a_flush_that_timed_out_settles_its_sends_instead_of_sending_again(settings):
    from bp_core.dead_letters.ledger import DeadLetterLedger, DeadLetterReader

    reader = DeadLetterReader(settings.kafka_bootstrap, settings.dlq_topic, settings.topic, timeout_s=10)
    sink = DeadLetterSink(_producer(settings), settings.dlq_topic, ledger=DeadLetterLedger(), reader=reader,
                          timeout_s=0.5)
    sink.ledger.take_up(1, dlq_end=reader.end())
    _dead_letters(sink, settings.topic, partition=1)

    with KafkaStall():
        with pytest.raises(SinkUnavailable, match="did not acknowledge"):
            sink.flush()  # sent, not acknowledged: the broker is stopped

    sink.timeout_s = 30
    assert sink.flush() == SENDS  # the sends in flight settled: none sent again
    assert sink.flush() == 0 and sink.already_held == 0
    assert len(read_all(settings.kafka_bootstrap, settings.dlq_topic)) == SENDS
    sink.producer.close()
    reader.close()


def test_a_revocation_waits_for_the_dead_letters_still_in_flight(settings):
    """The batch is given up on revocation, and the next owner reads the DLQ back before
    writing. So the hand-over returns only once every send has landed or failed: none
    can land after the next owner's read-back and be written twice."""
    from bp_core.consumer.writer import PreparedBatch, hand_over

    producer = _producer(settings)
    sink = DeadLetterSink(producer, settings.dlq_topic, timeout_s=0.5)
    _dead_letters(sink, settings.topic, partition=0)
    unwritten = Future()
    unwritten.set_exception(SinkUnavailable("dead-letter topic did not acknowledge"))
    batch = PreparedBatch(offsets={TopicPartition(settings.topic, 0): SENDS},
                          first_offsets={TopicPartition(settings.topic, 0): 0}, es=None, archive=None,
                          dlq=sink, future=unwritten)
    resumed = threading.Event()

    with KafkaStall() as stall:
        with pytest.raises(SinkUnavailable, match="did not acknowledge"):
            sink.flush()  # sent, not acknowledged: the broker is stopped

        def resume():
            resumed.set()
            stall.resume()

        threading.Timer(1.0, resume).start()  # the broker comes back while the hand-over waits
        written, settled = hand_over(batch, write_timeout_s=60, settle_timeout_s=125)
        assert resumed.is_set(), "the hand-over returned with the broker still stopped"

    assert (written, settled) == (False, True)
    assert batch.revoked
    assert len(read_all(settings.kafka_bootstrap, settings.dlq_topic)) == SENDS
    producer.close()
