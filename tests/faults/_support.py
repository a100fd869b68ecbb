"""Shared pieces of the fault tests: streams, exact-count checks, process control."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

from tests.integration.helpers import (
    BP, REPO, bp_env, committed_total, read_all, send, wait_for,
)
from bp_core.sinks.archive import read_archive  # noqa: F401 (re-exported)
from tests.integration.test_consumer import archive_ids, es_ids, make_stream  # noqa: F401 (re-exported)

def make_two_streams(n: int, seeds: tuple[int, int], prefixes: tuple[str, str], malformed_every: int = 0):
    """Two ``make_stream`` parts sent one after the other; returns (first, second, expected).

    ``expected`` covers both: the second part's DLQ indexes count on from the first's.
    """
    first, expected = make_stream(n, seed=seeds[0], malformed_every=malformed_every, prefix=prefixes[0])
    second, expected_second = make_stream(n, seed=seeds[1], malformed_every=malformed_every, prefix=prefixes[1])
    for kind in expected:
        expected[kind] |= {i + len(first) for i in expected_second[kind]} if kind == "dlq" else expected_second[kind]
    return first, second, expected


# The malformed payloads make_stream() draws from: a record with one of these values
# must end in the DLQ, every other record in Elasticsearch or the archive.
MALFORMED = {b"not json", b'{"resourceType": "Patient"}', b"[]"}
PAUSE_LOG = "sink unavailable, consumption paused, nothing committed"


def rules_only(tmp_path: Path) -> dict:
    """Env for a rules-only consumer that starts fast: a model file that does not exist.

    The provider logs 'rules-only' and never imports MLflow, so each (re)start of a
    killed consumer costs ~1 s instead of creating an MLflow SQLite store.
    """
    return {"BP_MODEL_PATH": str(tmp_path / "no-model.joblib")}


def start(settings, *args: str, log_path: Path, prefix: tuple[str, ...] = (), **env) -> subprocess.Popen:
    """`bp consume ARGS` as a subprocess (optionally under a wrapper such as setpriv)."""
    log = open(log_path, "ab")
    return subprocess.Popen([*prefix, BP, "consume", *args], env=bp_env(settings, **env),
                            stdout=log, stderr=log, cwd=REPO)


def produce_chunks(settings, messages, chunk: int, pause: float) -> None:
    for begin in range(0, len(messages), chunk):
        send(settings.kafka_bootstrap, settings.topic, messages[begin:begin + chunk])
        time.sleep(pause)


def committed(settings) -> int:
    try:
        return committed_total(settings.kafka_bootstrap, settings.consumer_group, settings.topic)
    except Exception:  # the broker may be the thing that is down
        return -1


def wait_committed(settings, total: int, timeout: float, proc: subprocess.Popen | None = None,
                   log_path: Path | None = None) -> None:
    def done():
        if proc is not None and proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:] if log_path else ""
            raise AssertionError(f"consumer exited with {proc.returncode} before committing {total}:\n{tail}")
        return committed(settings) == total
    try:
        wait_for(done, timeout=timeout, interval=0.5, what=f"{total} committed offsets")
    except AssertionError as exc:
        tail = log_path.read_text(errors="replace")[-3000:] if log_path and log_path.exists() else ""
        raise AssertionError(f"{exc}; {offsets_report(settings)}\n{tail}") from None


def offsets_report(settings) -> str:
    """Per partition: committed offset vs end offset (what a stuck commit looks like)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=settings.consumer_group,
                             enable_auto_commit=False)
    try:
        tps = [TopicPartition(settings.topic, p) for p in sorted(consumer.partitions_for_topic(settings.topic) or ())]
        ends = consumer.end_offsets(tps)
        return "partition committed/end: " + ", ".join(
            f"{tp.partition}: {consumer.committed(tp)}/{ends[tp]}" for tp in tps)
    finally:
        consumer.close()


def terminate(proc: subprocess.Popen, log_path: Path, timeout: float = 60) -> None:
    """SIGTERM: the consumer finishes its batch, commits and must exit 0."""
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=timeout)
    assert code == 0, f"exit {code}:\n" + log_path.read_text(errors="replace")[-3000:]


def kill_quietly(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()


def dlq_positions(settings) -> Counter:
    """The source position of every DLQ record, with repeats."""
    positions = Counter()
    for record in read_all(settings.kafka_bootstrap, settings.dlq_topic):
        headers = dict(record.headers)
        assert headers["bp.source.topic"].decode() == settings.topic
        assert headers["bp.error.reason"]
        positions[(int(headers["bp.source.partition"]), int(headers["bp.source.offset"]))] += 1
    return positions


def assert_exact(settings, es, expected: dict, total: int) -> None:
    """Every sink holds exactly what it should, and every offset is committed.

    ES: each expected anomaly id exactly once, nothing else. Archive: each expected
    normal id exactly once, nothing else. DLQ: the source position of each malformed
    record exactly once.
    """
    source = read_all(settings.kafka_bootstrap, settings.topic)
    assert len(source) == total, f"the topic holds {len(source)} records, expected {total}"
    assert es_ids(es, settings.es_index) == Counter(expected["anomaly"]), "ES: each anomaly exactly once"
    assert archive_ids(settings) == Counter(expected["normal"]), "archive: each normal exactly once"
    malformed = Counter((r.partition, r.offset) for r in source if r.value in MALFORMED)
    assert len(malformed) == len(expected["dlq"])
    assert dlq_positions(settings) == malformed, "DLQ: each malformed record exactly once"
    assert committed(settings) == total, "every offset committed"


def log_text(log_path: Path) -> str:
    return log_path.read_text(errors="replace") if log_path.exists() else ""


def env_of(settings, **extra) -> dict:
    return {**os.environ, **bp_env(settings, **extra)}
