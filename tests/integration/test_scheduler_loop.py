"""Proof of concept for the loop under a real scheduler (issue 25, point 4): `airflow
standalone` (scheduler, dag-processor, api-server, triggerer; SQLite, LocalExecutor) on
a throw-away AIRFLOW_HOME, driven through the REST API v2.

A champion serves, the sinks hold a window of cuff-offset readings; the test unpauses
`bp_monitor_drift` and `bp_train_model`, triggers `bp_monitor_drift`, and waits until
the scheduler itself starts `bp_train_model` from the `bp_drift_detected` event
(run type `asset_triggered`, not `airflow dags test`) and that run trains on a fresh
data set (`...-drift`).

    pytest -m scheduler tests/integration/test_scheduler_loop.py -s

About 20 s to start, 1.9 GB of RSS across 13 processes (measured here); the timings
are printed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from bp_core.drift.fill import SinkFiller, ensure_contract_index, with_fleets
from bp_core.simulation.cohort import Cohort
from tests.integration.test_airflow_dags import AIRFLOW, RUN_TIMEOUT, airflow_test_env

pytestmark = [pytest.mark.airflow, pytest.mark.scheduler]

PASSWORD = "loop-test"
START_TIMEOUT = 180
RUN_WAIT = 600


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(what: str, condition, timeout: float, every: float = 1.0):
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


class Airflow:
    """A running `airflow standalone` and a REST client for it."""

    def __init__(self, env: dict, home: Path) -> None:
        import httpx

        port = free_port()
        self.env = {**env, "AIRFLOW__API__PORT": str(port), "AIRFLOW__API__HOST": "127.0.0.1",
                    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
                    "AIRFLOW__CORE__PARALLELISM": "4", "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
                    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5"}
        self.env.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)
        (home / "simple_auth_manager_passwords.json.generated").write_text(json.dumps({"admin": PASSWORD}))
        self.log_path = home / "standalone.log"
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        self.started = time.monotonic()
        # Its own session: teardown signals the whole group (scheduler, workers, api-server...).
        self.process = subprocess.Popen([AIRFLOW, "standalone"], env=self.env, stdout=self.log_path.open("wb"),
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def healthy(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"airflow standalone exited {self.process.returncode}:\n{self.log_tail()}")
        try:
            health = self.http.get("/api/v2/monitor/health").json()
        except Exception:  # not listening yet
            return False
        return all(health.get(part, {}).get("status") == "healthy"
                   for part in ("metadatabase", "scheduler", "dag_processor", "triggerer"))

    def login(self) -> None:
        token = self.http.post("/auth/token", json={"username": "admin", "password": PASSWORD}).json()["access_token"]
        self.http.headers["Authorization"] = f"Bearer {token}"

    def api(self, method: str, path: str, **kwargs) -> dict:
        response = self.http.request(method, f"/api/v2{path}", **kwargs)
        assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text[:500]}"
        return response.json()

    def dag_parsed(self, dag_id: str) -> bool:
        return self.http.get(f"/api/v2/dags/{dag_id}").status_code == 200

    def runs(self, dag_id: str) -> list[dict]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns")["dag_runs"]

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        self.http.close()
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        # SIGTERM leaves the scheduler's LocalExecutor workers behind (seen here): end the group.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_drift_asset_triggers_training_under_the_scheduler(tmp_path, settings, es):
    from mlflow import MlflowClient

    from bp_core.model.registry import CHAMPION, client_for, set_alias
    from bp_core.model.serving import served
    from bp_core.model.training import train_and_register
    from bp_core.simulation.datasets import generate_dataset

    env = airflow_test_env(tmp_path)
    env.update({"BP_ES_URL": settings.es_url, "BP_ES_INDEX": settings.es_index, "BP_TOPIC": settings.topic,
                "BP_ARCHIVE_DIR": str(tmp_path / "archive"), "BP_METRICS_TEXTFILE_DIR": str(tmp_path / "metrics")})
    ours = settings.with_(data_dir=Path(env["BP_DATA_DIR"]), archive_dir=Path(env["BP_ARCHIVE_DIR"]),
                          mlflow_tracking_uri=env["MLFLOW_TRACKING_URI"])
    data = generate_dataset(ours.data_dir / "training" / "2026-03-02", patients=300, readings=30_000, seed=13)
    champion = train_and_register(ours, data)
    set_alias(client_for(ours.mlflow_tracking_uri), ours.model_name, CHAMPION, champion.model_version)
    ensure_contract_index(es, ours.es_index)
    SinkFiller(ours, es, served(ours.model_name, champion.model_version, champion.model)).write(
        with_fleets(Cohort(1000, 78).readings_frame(5000), offset_fleet="cuff-c"),
        datetime.now(timezone.utc) - timedelta(minutes=5))

    proc = subprocess.run([AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    airflow = Airflow(env, Path(env["AIRFLOW_HOME"]))
    timings = {}
    try:
        wait_for("a healthy scheduler, dag-processor and triggerer", airflow.healthy, START_TIMEOUT)
        timings["start (healthy)"] = time.monotonic() - airflow.started
        airflow.login()
        for dag_id in ("bp_monitor_drift", "bp_train_model"):
            wait_for(f"{dag_id} parsed", lambda d=dag_id: airflow.dag_parsed(d), START_TIMEOUT)
            airflow.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
        triggered = time.monotonic()
        airflow.api("POST", "/dags/bp_monitor_drift/dagRuns", json={"logical_date": None, "conf": {"since": "1h"}})

        def drift_run_done():
            done = [r for r in airflow.runs("bp_monitor_drift") if r["run_type"] == "manual"
                    and r["state"] in ("success", "failed")]
            return done[0] if done else None

        drift_run = wait_for("the bp_monitor_drift run", drift_run_done, RUN_WAIT, every=2)
        assert drift_run["state"] == "success", airflow.log_tail()
        timings["bp_monitor_drift run"] = time.monotonic() - triggered

        def training_run_done():
            runs = [r for r in airflow.runs("bp_train_model") if r["run_type"] == "asset_triggered"]
            return next((r for r in runs if r["state"] in ("success", "failed")), None)

        train_run = wait_for("bp_train_model triggered by bp_drift_detected", training_run_done, RUN_WAIT, every=2)
        timings["trigger -> bp_train_model done"] = time.monotonic() - triggered
        assert train_run["state"] == "success", airflow.log_tail()
        events = airflow.api("GET", f"/dags/bp_train_model/dagRuns/{train_run['dag_run_id']}/upstreamAssetEvents")
        assert ("bp_drift_detected", "bp_monitor_drift") in {
            (e.get("name"), e.get("source_dag_id")) for e in events["asset_events"]}, events
    finally:
        airflow.stop()
        print("\n" + "\n".join(f"  {seconds:6.1f} s  {what}" for what, seconds in timings.items()))

    client = MlflowClient(tracking_uri=ours.mlflow_tracking_uri)
    challenger = client.get_model_version_by_alias(ours.model_name, "challenger")
    source = client.get_run(challenger.run_id).data.tags["dataset.source"]
    assert challenger.version != champion.model_version
    assert source.endswith("-drift"), f"trained on {source}, not on fresh data from the stream's world"
