"""bp_monitor_drift run for real (`airflow dags test` in a subprocess, a throw-away
AIRFLOW_HOME and MLflow store) against this test's Elasticsearch index and archive.

Without a champion the run succeeds and signals nothing; with a champion and a window of
cuff-offset readings it records the report in MLflow (`bp-drift`) and Prometheus (the
textfile), and signals `bp_drift_detected` once: the next hourly run, which still sees
the drift, does not ask for a second retraining.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from bp_core.drift.fill import SinkFiller, ensure_contract_index, with_fleets
from bp_core.simulation.cohort import Cohort
from tests.integration.test_airflow_dags import AIRFLOW, RUN_TIMEOUT, airflow_test_env, dags_test

pytestmark = pytest.mark.airflow


@pytest.fixture
def drift_env(tmp_path, settings, es) -> dict:
    import subprocess

    env = airflow_test_env(tmp_path)
    env.update({"BP_ES_URL": settings.es_url, "BP_ES_INDEX": settings.es_index, "BP_TOPIC": settings.topic,
                "BP_ARCHIVE_DIR": str(tmp_path / "archive"), "BP_METRICS_TEXTFILE_DIR": str(tmp_path / "metrics")})
    ensure_contract_index(es, settings.es_index)
    proc = subprocess.run([AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return env


def drift_runs(env: dict) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"], registry_uri=env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("bp-drift")
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"]) if experiment else []


def textfile(env: dict) -> dict[str, float]:
    lines = (Path(env["BP_METRICS_TEXTFILE_DIR"]) / "bp_drift.prom").read_text().splitlines()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in lines if line and not line.startswith("#")}


def signalled(log: str) -> bool:
    """Whether the run's `signal` task (the one that updates bp_drift_detected) ran: the
    short-circuit skips it without starting it (`dags_test` checks that nothing failed)."""
    assert "[DAG TEST] end task task_id=drifted" in log, "the short-circuit task did not run"
    return "[DAG TEST] starting task_id=signal " in log


def test_no_champion_is_a_successful_run_that_signals_nothing(drift_env):
    end = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    log = dags_test(drift_env, "bp_monitor_drift", end.isoformat(), label="bp_monitor_drift (no champion)")
    assert not signalled(log)
    [run] = drift_runs(drift_env)
    assert run.data.tags["drift.compared"] == "false"
    assert run.data.tags["drift.reason"].startswith("no champion")
    assert textfile(drift_env)["bp_drift_can_compare"] == 0


def test_drift_is_recorded_and_signalled_once(drift_env, settings, es):
    from bp_core.model.registry import CHAMPION, client_for, set_alias
    from bp_core.model.serving import served
    from bp_core.model.training import train_and_register
    from bp_core.simulation.datasets import generate_dataset

    ours = settings.with_(data_dir=Path(drift_env["BP_DATA_DIR"]), archive_dir=Path(drift_env["BP_ARCHIVE_DIR"]),
                          mlflow_tracking_uri=drift_env["MLFLOW_TRACKING_URI"])
    data = generate_dataset(ours.data_dir / "training" / "2026-03-02", patients=300, readings=30_000, seed=12)
    result = train_and_register(ours, data)
    set_alias(client_for(ours.mlflow_tracking_uri), ours.model_name, CHAMPION, result.model_version)
    now = datetime.now(timezone.utc)
    filler = SinkFiller(ours, es, served(ours.model_name, result.model_version, result.model))
    filler.write(with_fleets(Cohort(1000, 77).readings_frame(5000), offset_fleet="cuff-c"), now - timedelta(minutes=5))

    end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    log = dags_test(drift_env, "bp_monitor_drift", end.isoformat(), label="bp_monitor_drift (drift)")
    assert signalled(log)
    [run] = drift_runs(drift_env)
    assert run.data.tags["drift.detected"] == "true" and run.data.tags["drift.signalled"] == "true"
    assert "cuff-c/systolic_mm_hg" in run.data.tags["drift.drifted"]
    assert run.data.metrics["segment.cuff-c.drift"] == 1.0
    assert run.data.metrics["readings"] == 5000
    from mlflow import MlflowClient

    report_path = MlflowClient(tracking_uri=drift_env["MLFLOW_TRACKING_URI"], registry_uri=drift_env["MLFLOW_TRACKING_URI"]).download_artifacts(
        run.info.run_id, "drift_report.json")
    report = json.loads(Path(report_path).read_text())
    assert report["drift"] is True and report["segments"]["cuff-c"]["drift"] is True
    figures = textfile(drift_env)
    assert figures["bp_drift_detected"] == 1 and figures["bp_drift_can_compare"] == 1
    assert figures['bp_drift_segment_detected{segment="cuff-c"}'] == 1
    assert 'bp_drift_score{feature="systolic_mm_hg",segment="cuff-c"}' in figures

    # An hour later the drift is still there: recorded, not signalled again.
    log = dags_test(drift_env, "bp_monitor_drift", (end + timedelta(hours=1)).isoformat(),
                    label="bp_monitor_drift (drift, already signalled)")
    assert not signalled(log)
    later = drift_runs(drift_env)[-1]
    assert later.data.tags["drift.detected"] == "true" and later.data.tags["drift.signalled"] == "false"
    assert later.data.tags["drift.reason"].startswith("already signalled for v1")
