"""The consumer image's Python environment is enough for `bp consume`, proved without Docker.

A fresh venv gets exactly what ``infra/consumer/Dockerfile`` installs: its COPY sources
in a build folder, then its RUN instructions run there, verbatim, with the venv's
``python`` first on PATH. `bp consume` from that venv then scores real messages on the
real stack with a model it loads through mlflow-skinny from a real ``mlflow server``
(SQLite store), as the container does from the compose file's mlflow service.

Slow: creating and filling the venv takes 40 s to 100 s on 2 cores (see the report
printed at the end and docs/stack.md).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from bp_core.sinks.archive import read_archive
from tests.integration.helpers import REPO, bp_env, dumps, observation, read_all, send, wait_for

pytestmark = pytest.mark.consumer_image

DOCKERFILE = REPO / "infra" / "consumer" / "Dockerfile"
NOT_IN_THE_IMAGE = ("apache-airflow", "mlflow", "Faker", "pyarrow", "fhir.resources")


def dockerfile_steps() -> tuple[list[tuple[list[str], str]], list[str]]:
    """(COPY sources and destination, RUN commands after the first COPY), continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    copies, runs = [], []
    for line in text.splitlines():
        words = line.split(None, 1)
        if not words or words[0] not in ("COPY", "RUN"):
            continue
        if words[0] == "COPY":
            *sources, destination = [w for w in shlex.split(words[1]) if not w.startswith("--")]
            copies.append((sources, destination))
        elif copies:
            runs.append(words[1].strip())
    return copies, runs


def build_folder(folder: Path) -> Path:
    """The image's WORKDIR after the COPY instructions (sources from the repository)."""
    import shutil

    copies, _ = dockerfile_steps()
    for sources, destination in copies:
        for source in sources:
            target = folder / destination / source if destination.endswith("/") else folder / destination
            if (REPO / source).is_dir():
                shutil.copytree(REPO / source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / source, target)
    return folder


def clean_env(venv: Path, **extra: str) -> dict:
    """The venv first on PATH; nothing that would import the repository's own copy."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_mlflow_server(root: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = open(root / "mlflow-server.log", "wb")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts"),
         "--workers", "1"],
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, cwd=root, stdout=log,
        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert proc.poll() is None, (root / "mlflow-server.log").read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    wait_for(healthy, timeout=120, interval=0.5, what="mlflow server")
    return proc, url


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group this test started (the server and its workers), then SIGKILL."""
    for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass


def test_bp_consume_runs_from_the_consumer_images_packages(settings, es, tmp_path):
    from mlflow import MlflowClient

    from bp_core.model.training import train_and_register
    from bp_core.simulation.datasets import generate_dataset

    timings = {}
    started = time.monotonic()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    workdir = build_folder(tmp_path / "image")
    _, runs = dockerfile_steps()
    assert any("pip install" in run for run in runs)
    for run in runs:
        step = subprocess.run(["bash", "-c", run], cwd=workdir, env=clean_env(venv), capture_output=True, text=True,
                              timeout=900)
        assert step.returncode == 0, f"RUN {run}\n{step.stdout[-3000:]}\n{step.stderr[-3000:]}"
    python = str(venv / "bin" / "python")
    check = subprocess.run([python, "-m", "pip", "check"], env=clean_env(venv), capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    probe = ("import importlib.metadata as m, sys\n"
             "for name in sys.argv[1:]:\n"
             "    try:\n        m.version(name); print(name)\n"
             "    except m.PackageNotFoundError:\n        pass")
    installed = subprocess.run([python, "-c", probe, *NOT_IN_THE_IMAGE, "mlflow-skinny"], env=clean_env(venv),
                               capture_output=True, text=True, check=True).stdout.split()
    assert installed == ["mlflow-skinny"], f"the slim set holds {installed}"
    timings["venv from the Dockerfile's commands"] = time.monotonic() - started

    # A champion in a real MLflow server's SQLite store, trained with the full environment.
    t0 = time.monotonic()
    server, mlflow_url = start_mlflow_server(tmp_path)
    try:
        served = settings.with_(mlflow_tracking_uri=mlflow_url)
        version = train_and_register(served, generate_dataset(tmp_path / "d", patients=40, readings=4000, seed=1),
                                     seed=1).model_version
        MlflowClient(mlflow_url).set_registered_model_alias(served.model_name, served.model_alias, version)
        timings["mlflow server + champion"] = time.monotonic() - t0

        high = [(f"pat-{i}".encode(), dumps(observation(f"high-{i}", f"pat-{i}", 165, 100))) for i in range(5)]
        normal = [(f"pat-{i}".encode(), dumps(observation(f"normal-{i}", f"pat-{i}", 118, 76))) for i in range(5)]
        send(served.kafka_bootstrap, served.topic, [*high, *normal, (b"pat-x", b"not json")])

        t0 = time.monotonic()
        env = clean_env(venv, **{k: v for k, v in bp_env(served).items() if k.startswith(("BP_", "MLFLOW_"))})
        consume = subprocess.run([str(venv / "bin" / "bp"), "consume", "--exit-when-idle", "3"], env=env,
                                 cwd=tmp_path, capture_output=True, text=True, timeout=300)
        timings["bp consume"] = time.monotonic() - t0
        assert consume.returncode == 0, consume.stderr[-4000:]
        assert f"serving {served.model_name} version {version}" in consume.stderr, consume.stderr[-4000:]
    finally:
        stop_group(server)

    es.indices.refresh(index=served.es_index)
    hits = es.search(index=served.es_index, size=100)["hits"]["hits"]
    assert sorted(h["_source"]["observation_id"] for h in hits) == sorted(f"high-{i}" for i in range(5))
    assert {(h["_source"]["model_name"], h["_source"]["model_version"]) for h in hits} == {(served.model_name, version)}
    assert all(0.0 <= h["_source"]["model_probability"] <= 1.0 for h in hits)
    assert Counter(r["observation_id"] for r in read_archive(served.archive_dir, served.topic)) == Counter(
        f"normal-{i}" for i in range(5))
    assert [record.value for record in read_all(served.kafka_bootstrap, f"{served.topic}.dlq")] == [b"not json"]
    print("\n[consumer image] " + "; ".join(f"{what} {seconds:.1f} s" for what, seconds in timings.items()))
