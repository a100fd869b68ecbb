"""The DAGs run for real: `airflow dags test` subprocesses against a throw-away
AIRFLOW_HOME (SQLite metadata DB migrated once), a throw-away MLflow SQLite store and
data folder, and the real local Kafka.

The model lifecycle is one test because its steps build on each other:

1. a tiny data set -> v1, promoted (no champion yet)
2. a larger data set -> v2, promoted over v1 (previous-champion = v1)
3. regenerate the tiny date (same partition, same bytes); retrain on it -> v3,
   rejected by the gate (a successful run)
4. `bp promote --rollback` -> champion back to v1

Then a rolled-back version stays out through two runs of `bp_promote_model`.

Each `airflow dags test` takes ~15-20 s here, most of it Airflow start-up; the durations
are printed (`pytest -s`) and attached as test properties.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.helpers import read_all

pytestmark = pytest.mark.airflow

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
AIRFLOW = str(BIN / "airflow")
BP = str(BIN / "bp")
MODEL = "bp-anomaly-classifier"
RUN_TIMEOUT = 240

DURATIONS: dict[str, float] = {}


def airflow_test_env(root: Path) -> dict:
    """An environment for Airflow subprocesses on this repo's DAGs and plugins, with every
    piece of state (Airflow home, data, the MLflow store ``root/mlflow.db``) under ``root``
    and no inherited ``AIRFLOW*``/``BP_*``/``MLFLOW_*`` setting."""
    home = root / "airflow-home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW", "BP_", "MLFLOW_"))}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
        "BP_DATA_DIR": str(root / "data"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    })
    return env


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory) -> dict:
    """Environment of every Airflow subprocess; the metadata DB is migrated once."""
    env = airflow_test_env(tmp_path_factory.mktemp("airflow-dags"))
    started = time.monotonic()
    proc = subprocess.run([AIRFLOW, "db", "migrate"], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT)
    DURATIONS["airflow db migrate"] = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    yield env
    print("\n" + "\n".join(f"  {seconds:6.1f} s  {what}" for what, seconds in DURATIONS.items()))


def dags_test(env: dict, dag_id: str, date: str, conf: dict | None = None, label: str | None = None) -> str:
    """Run one DAG run to completion in a subprocess; fail with its log tail otherwise."""
    args = [AIRFLOW, "dags", "test", dag_id, date]
    if conf:
        args += ["-c", json.dumps(conf)]
    started = time.monotonic()
    proc = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    DURATIONS[label or f"dags test {dag_id} {date}"] = time.monotonic() - started
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(args)} exited {proc.returncode}:\n{log[-6000:]}"
    # `dags test` exits 0 even when a task failed: check the run's final state.
    assert "state=success" in log and "state=failed" not in log, f"{dag_id} did not succeed:\n{log[-6000:]}"
    return log


def mlflow_client(env: dict):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"], registry_uri=env["MLFLOW_TRACKING_URI"])


def alias_version(client, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(MODEL, alias).version)
    except MlflowException:
        return None


def training_source(client, version: str) -> str:
    run_id = client.get_model_version(MODEL, version).run_id
    return client.get_run(run_id).data.tags["dataset.source"]


def test_generate_train_promote_rollback(airflow_env):
    env = {**airflow_env, "BP_GATE_MIN_SHADOW_READINGS": "0"}  # no consumer shadow-scores here
    training = Path(env["BP_DATA_DIR"]) / "training"
    promote_conf = {"holdout_readings": 5000}

    # 1. A tiny data set: its model is poor, but it beats the rules alone on the hold-out.
    dags_test(env, "bp_generate_data", "2026-03-02", {"patients": 10, "readings": 400},
              label="bp_generate_data (tiny)")
    tiny = training / "2026-03-02"
    assert (tiny / "readings.parquet").is_file() and (tiny / "manifest.json").is_file()
    manifest = json.loads((tiny / "manifest.json").read_text())
    assert manifest["seed"] == 20260302, "the default seed derives from the run date"
    assert manifest["end"].startswith("2026-03-01"), "the readings end at the run date: history"
    assert manifest["scenario"] == "baseline", "no param, no Variable"
    tiny_bytes = (tiny / "readings.parquet").read_bytes()
    dags_test(env, "bp_train_model", "2026-03-02", label="bp_train_model (tiny -> v1)")
    client = mlflow_client(env)
    assert alias_version(client, "challenger") == "1"
    assert training_source(client, "1") == str(tiny)
    dags_test(env, "bp_promote_model", "2026-03-02", promote_conf, label="bp_promote_model (v1: promoted)")
    assert alias_version(client, "champion") == "1"

    # 2. A larger data set (the newest partition): a better model, promoted over v1.
    dags_test(env, "bp_generate_data", "2026-03-03", {"patients": 200, "readings": 10_000},
              label="bp_generate_data (larger)")
    larger = training / "2026-03-03"
    dags_test(env, "bp_train_model", "2026-03-03", label="bp_train_model (larger -> v2)")
    assert alias_version(client, "challenger") == "2"
    assert training_source(client, "2") == str(larger), "trains on the newest partition by default"
    log = dags_test(env, "bp_promote_model", "2026-03-03", promote_conf, label="bp_promote_model (v2: promoted)")
    assert "promotion decision: promoted" in log
    assert alias_version(client, "champion") == "2"
    assert alias_version(client, "previous-champion") == "1"

    # 3. Rerun the tiny date: the same partition is rewritten with the same content.
    dags_test(env, "bp_generate_data", "2026-03-02", {"patients": 10, "readings": 400},
              label="bp_generate_data (tiny, rerun)")
    assert sorted(p.name for p in training.iterdir()) == ["2026-03-02", "2026-03-03"]
    assert (tiny / "readings.parquet").read_bytes() == tiny_bytes

    # 4. Roll back the v1 -> v2 promotion with the command line.
    started = time.monotonic()
    proc = subprocess.run([BP, "promote", "--rollback"], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT)
    DURATIONS["bp promote --rollback"] = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert alias_version(client, "champion") == "1"


def test_generate_data_in_the_world_the_variable_names(airflow_env, tmp_path):
    """No `scenario` param: the Airflow Variable bp_scenario (read when the task runs)."""
    env = {**airflow_env, "BP_DATA_DIR": str(tmp_path / "data"), "AIRFLOW_VAR_BP_SCENARIO": "older-cohort"}
    dags_test(env, "bp_generate_data", "2026-03-05", {"patients": 20, "readings": 400},
              label="bp_generate_data (Variable: older-cohort)")
    manifest = json.loads((tmp_path / "data" / "training" / "2026-03-05-older-cohort" / "manifest.json").read_text())
    assert manifest["scenario"] == "older-cohort"


def test_a_rolled_back_version_stays_out_when_the_gate_runs_again(airflow_env, tmp_path):
    """Rollback, then `bp_promote_model` run twice (a rerun, as a retry or the hourly
    schedule would): the rolled-back challenger is rejected both times, champion unchanged."""
    from bp_core.model.promotion import promote, rollback
    from bp_core.model.training import train_and_register
    from bp_core.settings import Settings
    from bp_core.simulation.datasets import generate_dataset

    env = {**airflow_env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "BP_DATA_DIR": str(tmp_path / "data"), "BP_GATE_MIN_SHADOW_READINGS": "0"}
    bp_settings = Settings.from_env(env)
    data = generate_dataset(tmp_path / "d", patients=50, readings=5000, seed=1)
    for _ in range(2):  # v1, then the same pipeline again as v2 (as good: promoted at margin 0)
        train_and_register(bp_settings, data, seed=1)
        assert promote(bp_settings, margin=0.0, holdout_readings=5000).promoted
    rollback(bp_settings, reason="alerts doubled on ward 3")
    client = mlflow_client(env)
    assert (alias_version(client, "champion"), alias_version(client, "challenger")) == ("1", "2")

    for label in ("bp_promote_model (rolled-back v2)", "bp_promote_model (rolled-back v2, rerun)"):
        log = dags_test(env, "bp_promote_model", "2026-03-05", {"holdout_readings": 5000, "margin": 0.0}, label=label)
        assert "promotion decision: rejected" in log and "alerts doubled on ward 3" in log
        assert alias_version(client, "champion") == "1"
    assert client.get_model_version(MODEL, "2").tags["promotion.decision"] == "rejected"


def test_stream_simulation_produces_to_kafka(airflow_env, settings, topic, kafka_admin):
    patients_topic = f"{topic}.patients"
    env = {**airflow_env, "BP_KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "BP_TOPIC": topic,
           "BP_PATIENTS_TOPIC": patients_topic}
    try:
        dags_test(env, "bp_stream_simulation", "2026-03-02",
                  {"count": 200, "rate": 2000, "patients": 20, "seed": 7, "scenario": "cuff-offset"},
                  label="bp_stream_simulation (200 msgs, cuff-offset)")
        records = read_all(settings.kafka_bootstrap, topic)
        patients = read_all(settings.kafka_bootstrap, patients_topic)
    finally:
        kafka_admin.delete_topics([patients_topic])
    assert len(records) == 200
    assert {r.key for r in records} == {p.key for p in patients} and len(patients) == 20
    first = json.loads(records[0].value)
    assert first["resourceType"] == "Observation"
    fleets = {r.key: json.loads(r.value)["device"]["display"] for r in records}
    assert sum(model == "HomeCheck Pro" for model in fleets.values()) == 4, "the offset fleet: 20 % of 20"
