"""Shadow scoring in a running consumer, and the promotion gate that reads its evidence
(issue 23), against the real broker, Elasticsearch and an MLflow SQLite store.

Models are trained with ``train_and_register`` on small simulated data sets (each call
registers a version and points ``challenger`` at it); the champion is set with the
operator's override (``promote_version``). A consumer publishes its evidence to MLflow
every 30 s and when it stops; a test makes an in-process consumer publish at once with
``ShadowRecorder.publish_now``, the recorder's public way for tests.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from bp_core.consumer.service import ConsumerOptions, ConsumerService
from bp_core.model.promotion import promote_version
from bp_core.model.registry import CHALLENGER, CHAMPION, client_for, get_alias_version, set_alias
from bp_core.model.shadow import read_evidence
from bp_core.model.training import train_and_register
from tests.integration.helpers import BP, REPO, bp_env, committed_total, patient_stream, send, start_consumer, wait_for

START = (datetime.now(timezone.utc) - timedelta(days=10)).replace(minute=0, second=0, microsecond=0)


@pytest.fixture
def settings(settings, mlflow_store_template):
    shutil.copyfile(mlflow_store_template, settings.mlflow_tracking_uri.removeprefix("sqlite:///"))
    return settings


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """Two small labelled data sets of different simulated cohorts."""
    from bp_core.simulation.datasets import generate_dataset

    root = tmp_path_factory.mktemp("shadow-data")
    return SimpleNamespace(first=generate_dataset(root / "first", patients=40, readings=3000, seed=1),
                           second=generate_dataset(root / "second", patients=40, readings=3000, seed=2))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def shadow_readings(port: int) -> dict[str, float]:
    """``bp_shadow_readings_total`` on the consumer's /metrics, by challenger version."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {sample.labels["challenger_version"]: sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples
            if sample.name == "bp_shadow_readings_total"}


def shadow_families(port: int) -> set[str]:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {family.name for family in text_string_to_metric_families(text) if family.name.startswith("bp_shadow_")}


@contextmanager
def running(settings, **options):
    """A consumer running in this process (on a thread of its own) until the block ends."""
    service = ConsumerService(settings, ConsumerOptions(**options))
    with ThreadPoolExecutor(max_workers=1) as pool:
        outcome = pool.submit(service.run)
        try:
            wait_for(lambda: service.shadow is not None or outcome.done(), timeout=60, what="the consumer started")
            assert not outcome.done(), outcome.result()
            yield service
        finally:
            service.stop()
            assert outcome.result(timeout=60) == 0


def evidence(settings, challenger: str, champion: str):
    return read_evidence(client_for(settings.mlflow_tracking_uri), settings.model_name, challenger, champion)


def test_a_running_consumer_shadow_scores_the_challenger_as_its_alias_moves(settings, datasets, es, tmp_path):
    client = client_for(settings.mlflow_tracking_uri)
    champion = train_and_register(settings, datasets.first, seed=1).model_version
    promote_version(settings, champion, reason="this test's champion")
    unloadable = client.create_model_version(settings.model_name, source=str(tmp_path / "no-such-model")).version
    set_alias(client, settings.model_name, CHALLENGER, unloadable)
    messages = patient_stream(40, 30, seed=5, start=START)  # 1,200 readings
    sent = 0
    port = free_port()

    def consume_next(count: int) -> None:
        nonlocal sent
        send(settings.kafka_bootstrap, settings.topic, messages[sent:sent + count])
        sent += count
        wait_for(lambda: committed_total(settings.kafka_bootstrap, settings.consumer_group, settings.topic) == sent,
                 timeout=60, interval=0.3, what=f"{sent} messages committed")

    def challenger_is(version: str | None):
        return lambda: (service.shadow.provider.current.version if service.shadow.provider.current else None) == version

    with running(settings, metrics_port=port, model_refresh=1.0, batch_size=100) as service:
        # A challenger that cannot be loaded: nothing to shadow, and no batch waits for it.
        consume_next(200)
        assert service.shadow.scored == 0 and "bp_shadow_readings" not in shadow_families(port)

        second = train_and_register(settings, datasets.second, seed=2).model_version  # the alias moves to it
        wait_for(challenger_is(second), timeout=60, what=f"challenger version {second} taken up")
        consume_next(300)
        wait_for(lambda: shadow_readings(port).get(second) == 300, timeout=30, what="300 on /metrics")
        assert {"bp_shadow_readings", "bp_shadow_alerts", "bp_shadow_agreement", "bp_shadow_alert_rate",
                "bp_shadow_challenger_probability"} <= shadow_families(port)
        assert service.shadow.recorder.publish_now()
        assert evidence(settings, second, champion).readings == 300
        consume_next(300)
        assert service.shadow.recorder.publish_now()
        grown = evidence(settings, second, champion)
        assert (grown.readings, grown.members) == (600, 1), "the evidence grows as the consumer consumes"
        assert grown.both + grown.champion_only == grown.champion_alerts > 0
        assert grown.both + grown.challenger_only == grown.challenger_alerts > 0
        assert sum(grown.histogram) == 600

        third = train_and_register(settings, datasets.first, seed=3, C=0.05).model_version
        wait_for(challenger_is(third), timeout=60, what=f"challenger version {third} taken up")
        consume_next(200)
        assert service.shadow.recorder.publish_now()
        assert evidence(settings, third, champion).readings == 200, "new evidence for the new challenger"
        assert evidence(settings, second, champion).readings == 600, "the previous one's is kept, not added to"
        assert shadow_readings(port) == {third: 200}

        # The alias moves to a version that cannot be loaded: the previous challenger is no
        # longer shadow-scored, and the batches go through.
        set_alias(client, settings.model_name, CHALLENGER, unloadable)
        wait_for(challenger_is(None), timeout=60, what="the unloadable challenger given up")
        consume_next(200)
    assert evidence(settings, third, champion).readings == 200
    assert service.shadow.scored == 800


def bp_promote(settings, **env) -> subprocess.CompletedProcess:
    return subprocess.run([BP, "promote", "--holdout-readings", "1000", "--margin", "0"], env=bp_env(settings, **env),
                          cwd=REPO, capture_output=True, text=True, timeout=300)


def test_the_gate_defers_without_enough_live_evidence_and_promotes_with_it(settings, datasets, tmp_path):
    client = client_for(settings.mlflow_tracking_uri)
    champion = train_and_register(settings, datasets.first, seed=1).model_version
    promote_version(settings, champion, reason="this test's champion")
    # The same fit again: equal on the hold-out, so only the live evidence can hold it back.
    challenger = train_and_register(settings, datasets.first, seed=1).model_version
    messages = patient_stream(40, 15, seed=9, start=START)  # 600 readings

    def consumer_run(chunk, name: str) -> None:
        """A consumer process scores a chunk and stops (SIGTERM): it publishes its evidence as it stops."""
        total = committed_total(settings.kafka_bootstrap, settings.consumer_group, settings.topic) + len(chunk)
        log_path = tmp_path / f"{name}.log"
        proc = start_consumer(settings, "--batch-size", "100", log_path=log_path)
        try:
            send(settings.kafka_bootstrap, settings.topic, chunk)
            wait_for(lambda: committed_total(settings.kafka_bootstrap, settings.consumer_group, settings.topic)
                     == total or proc.poll() is not None, timeout=90, interval=0.3, what="the chunk committed")
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0, log_path.read_text()[-3000:]

    consumer_run(messages[:300], "first")
    assert evidence(settings, challenger, champion).readings == 300
    deferred = bp_promote(settings, BP_GATE_MIN_SHADOW_READINGS=500)
    assert deferred.returncode == 0, deferred.stderr
    assert "decision: deferred" in deferred.stdout
    assert "waiting for live evidence: 300 of 500 readings shadow-scored so far" in deferred.stdout
    assert get_alias_version(client, settings.model_name, CHAMPION) == champion

    consumer_run(messages[300:], "second")
    gathered = evidence(settings, challenger, champion)
    assert (gathered.readings, gathered.members) == (600, 2), "two consumer processes, their evidence summed"
    promoted = bp_promote(settings, BP_GATE_MIN_SHADOW_READINGS=500)
    assert promoted.returncode == 0, promoted.stderr
    assert "decision: promoted" in promoted.stdout and "on live traffic live_alert_rate" in promoted.stdout
    assert get_alias_version(client, settings.model_name, CHAMPION) == challenger
