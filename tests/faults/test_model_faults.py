"""MLflow unreachable at start-up and during a model refresh (a real ``mlflow server``).

The tracking server sits behind ``helpers.TcpProxy``: ``cut()`` closes every
connection and refuses new ones, as a server going away does; ``hang()`` accepts and
never answers, as a stuck server does (the refresh runs on its own thread). The consumer's provider
fails fast (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``=1, ``MLFLOW_HTTP_REQUEST_TIMEOUT``=10 s,
set by ``bp_core.model.serving.ModelProvider.start`` for HTTP URIs) and never raises.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.faults._support import assert_exact, kill_quietly, log_text, start, terminate, wait_committed
from tests.integration.helpers import TcpProxy, dumps, observation, send, wait_for
from tests.integration.test_consumer import HIGH, LOW, NORMAL

pytestmark = [pytest.mark.faults, pytest.mark.integration]
MLFLOW = str(Path(sys.executable).parent / "mlflow")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """A real tracking server (SQLite backend, local artifact store), one worker."""
    port = _free_port()
    log = open(tmp_path / "mlflow-server.log", "ab")
    proc = subprocess.Popen([MLFLOW, "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                             "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"],
                            stdout=log, stderr=log, start_new_session=True)

    def healthy():
        import urllib.request

        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200
        except OSError:
            assert proc.poll() is None, (tmp_path / "mlflow-server.log").read_text()[-3000:]
            return False
    try:
        wait_for(healthy, timeout=90, interval=0.5, what="mlflow server")
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: the server and its worker(s)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _batch(prefix: str, n: int, expected: dict) -> list:
    messages = []
    for i in range(n):
        values = (HIGH, LOW, NORMAL, NORMAL)[i % 4]
        obs_id = f"{prefix}-{i}"
        messages.append((f"pat-{i % 20}".encode(), dumps(observation(obs_id, f"pat-{i % 20}", *values))))
        expected["normal" if values == NORMAL else "anomaly"].add(obs_id)
    return messages


def _versions(es, settings, prefix: str) -> set:
    from tests.faults._support import read_archive

    es.indices.refresh(index=settings.es_index)
    hits = es.search(index=settings.es_index, size=1000, query={"prefix": {"observation_id": prefix + "-"}},
                     source=["model_version"])["hits"]["hits"]
    archived = [r for r in read_archive(settings.archive_dir, settings.topic)
                if r["observation_id"].startswith(prefix + "-")]
    assert hits and archived
    return {h["_source"]["model_version"] for h in hits} | {r["model_version"] for r in archived}


@pytest.mark.timeout(300)
def test_mlflow_unreachable_at_start_then_during_refresh(settings, es, tmp_path, mlflow_server):
    from bp_core.simulation.datasets import generate_dataset
    from bp_core.model.promotion import promote
    from bp_core.model.training import train_and_register

    direct = settings.with_(mlflow_tracking_uri=f"http://127.0.0.1:{mlflow_server}")
    trained = train_and_register(direct, generate_dataset(tmp_path / "d1", patients=40, readings=4000, seed=1), seed=1)
    decision = promote(direct, holdout_readings=4000)
    assert decision.promoted, decision.summary()
    champion = str(trained.model_version)

    proxy = TcpProxy("127.0.0.1", mlflow_server)
    proxied = settings.with_(mlflow_tracking_uri=f"http://127.0.0.1:{proxy.port}")
    expected = {"anomaly": set(), "normal": set(), "dlq": set()}
    log_path = tmp_path / "consumer.log"
    proc = None
    try:
        # (a) MLflow unreachable at start-up: rules-only, then the champion once reachable.
        # The client timeout is 10 minutes (the provider only sets a default): in (c) a
        # check that waits on MLflow must not hold up the batches.
        proxy.cut()
        proc = start(proxied, "--model-refresh", "2", "--batch-size", "200", log_path=log_path,
                     MLFLOW_HTTP_REQUEST_TIMEOUT="600")
        send(settings.kafka_bootstrap, settings.topic, _batch("a", 200, expected))
        wait_committed(settings, 200, timeout=90, proc=proc, log_path=log_path)
        assert "rules-only" in log_text(log_path)
        assert _versions(es, settings, "a") == {None}
        proxy.restore()
        restored_at = time.monotonic()
        wait_for(lambda: f"version {champion}" in log_text(log_path), timeout=60, what="the champion served")
        swap_seconds = time.monotonic() - restored_at
        send(settings.kafka_bootstrap, settings.topic, _batch("b", 200, expected))
        wait_committed(settings, 400, timeout=60, proc=proc, log_path=log_path)
        assert _versions(es, settings, "b") == {champion}

        # (b) MLflow cut during refreshes: keep the current model, do not crash.
        proxy.cut()
        wait_for(lambda: "cannot refresh the model" in log_text(log_path), timeout=30, what="the refresh warning")
        time.sleep(5)  # a few more refresh attempts against a dead server
        assert proc.poll() is None
        send(settings.kafka_bootstrap, settings.topic, _batch("c", 200, expected))
        wait_committed(settings, 600, timeout=60, proc=proc, log_path=log_path)
        assert _versions(es, settings, "c") == {champion}
        assert f"keeping version {champion}" in log_text(log_path)
        proxy.restore()

        # (c) MLflow accepts connections and never answers: the refresh thread waits on
        # it (10 min), the consumer goes on with the model it has.
        proxy.hang()
        wait_for(lambda: proxy.held() > 0, timeout=30, what="a refresh request stuck on MLflow")
        send(settings.kafka_bootstrap, settings.topic, _batch("d", 200, expected))
        wait_committed(settings, 800, timeout=60, proc=proc, log_path=log_path)
        assert _versions(es, settings, "d") == {champion}
        terminate(proc, log_path)
    finally:
        kill_quietly(proc)
        proxy.close()
    print(f"champion served {swap_seconds:.1f}s after MLflow became reachable (refresh every 2 s)")
    assert swap_seconds < 30
    assert_exact(settings, es, expected, 800)
