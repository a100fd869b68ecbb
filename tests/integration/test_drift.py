"""`bp drift` against real sinks: readings written by the sinks' own classes into this
test's Elasticsearch index and archive folder, a champion trained and registered in a
throw-away MLflow store, the command run as a subprocess.

Each window follows a history: the same patients' earlier readings, ingested before the
window, so the consumer's patient state gives the window's readings their baselines as
on a stream that has been running (a fresh stream's readings have none, which is no drift).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from bp_core.drift.fill import SinkFiller, ensure_contract_index
from bp_core.simulation.cohort import Cohort
from bp_core.simulation.scenarios import OFFSET_FLEET

BP = str(Path(sys.executable).parent / "bp")
NOW = datetime.now(timezone.utc)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    """A champion (v1) trained on a 300-patient data set, in a module-wide MLflow store."""
    from bp_core.model.registry import CHAMPION, client_for, set_alias
    from bp_core.model.training import train_and_register
    from bp_core.settings import Settings
    from bp_core.simulation.datasets import generate_dataset

    root = tmp_path_factory.mktemp("drift-store")
    settings = Settings.from_env({"BP_DATA_DIR": str(root / "data"),
                                  "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"})
    data = generate_dataset(root / "data" / "training" / "2026-03-02", patients=300, readings=30_000, seed=11)
    result = train_and_register(settings, data)
    set_alias(client_for(settings.mlflow_tracking_uri), settings.model_name, CHAMPION, result.model_version)
    return {"data_dir": settings.data_dir, "tracking_uri": settings.mlflow_tracking_uri, "dataset": data,
            "model": result.model, "version": result.model_version}


@pytest.fixture
def deployment(settings, store, es):
    """This test's sinks and the module's champion."""
    from bp_core.model.serving import served

    settings = settings.with_(data_dir=store["data_dir"], mlflow_tracking_uri=store["tracking_uri"])
    ensure_contract_index(es, settings.es_index)
    filler = SinkFiller(settings, es, served(settings.model_name, store["version"], store["model"]))
    return settings, filler


def bp_drift(settings, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BP_", "MLFLOW_"))}
    env.update({"BP_ES_URL": settings.es_url, "BP_ES_INDEX": settings.es_index, "BP_TOPIC": settings.topic,
                "BP_ARCHIVE_DIR": str(settings.archive_dir), "BP_DATA_DIR": str(settings.data_dir),
                "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri})
    return subprocess.run([BP, "drift", *args], env=env, capture_output=True, text=True, timeout=180)


def report(settings, *args: str) -> dict:
    proc = bp_drift(settings, "--json", *args)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


HISTORY = 15  # readings of each patient before the window


def stream(filler, seed: int, readings: int, ingested_at, *, patients: int = 1000, scenario: str = "baseline",
           history_ingested_at=None) -> tuple[int, int]:
    """Write ``readings`` readings of ``patients`` (in the world ``scenario``) ingested at
    ``ingested_at``, after ``HISTORY`` readings each from the baseline world ingested 3 h
    earlier; returns the window's (anomalies, normal readings)."""
    first = HISTORY * patients
    filler.write(Cohort(patients, seed).readings_frame(first), history_ingested_at or ingested_at - timedelta(hours=3))
    return filler.write(Cohort(patients, seed, scenario=scenario).readings_frame(readings, first=first), ingested_at)


def test_a_stationary_stream_shows_no_drift_and_the_json_contract(deployment):
    settings, filler = deployment
    anomalies, normals = stream(filler, 501, 5000, NOW - timedelta(minutes=10))
    assert anomalies and normals, "both sinks hold part of the window"

    result = report(settings, "--since", "1h")
    assert set(result) == {"drift", "window", "reference", "features", "segments"}
    assert set(result["window"]) == {"start", "end", "readings"}
    assert result["window"]["readings"] == anomalies + normals
    assert result["reference"] == {"model_version": "1", "dataset_digest": result["reference"]["dataset_digest"]}
    assert result["reference"]["dataset_digest"]
    assert {"systolic_mm_hg", "squared_deviation", "model_probability", "alert_rate"} <= set(result["features"])
    for entry in result["features"].values():
        assert set(entry) == {"statistic", "score", "threshold", "drift"}
    assert set(result["segments"]) == {"ArmCuff 200", "ArmCuff 100", OFFSET_FLEET, "WristCuff 50"}
    assert sum(s["readings"] for s in result["segments"].values()) == anomalies + normals
    assert result["drift"] is False, ([n for n, e in result["features"].items() if e["drift"]], {
        fleet: [n for n, e in s["features"].items() if e["drift"]] for fleet, s in result["segments"].items()})
    assert not any(s["drift"] for s in result["segments"].values()), {
        fleet: [n for n, e in s["features"].items() if e["drift"]] for fleet, s in result["segments"].items()}


def test_cuff_offset_is_found_in_its_fleet(deployment):
    settings, filler = deployment
    stream(filler, 502, 5000, NOW - timedelta(minutes=5), scenario="cuff-offset")

    result = report(settings, "--since", "1h")
    assert result["drift"] is True
    offset_fleet = result["segments"][OFFSET_FLEET]
    assert offset_fleet["drift"] is True
    assert offset_fleet["features"]["systolic_mm_hg"]["drift"] is True
    assert offset_fleet["features"]["systolic_mm_hg"]["score"] > 0.5, "+15 mmHg is most of a reference SD"
    assert not any(segment["drift"] for name, segment in result["segments"].items() if name != OFFSET_FLEET)


def test_the_window_is_by_ingestion_time(deployment):
    settings, filler = deployment
    older = sum(stream(filler, 503, 3000, NOW - timedelta(hours=30), scenario="cuff-offset",
                       history_ingested_at=NOW - timedelta(days=5)))
    recent = sum(stream(filler, 504, 2000, NOW - timedelta(hours=2), history_ingested_at=NOW - timedelta(days=5)))

    assert report(settings)["window"]["readings"] == recent, "default 24h: the offset readings are older"
    old = report(settings, "--since", "2d")
    assert old["window"]["readings"] == older + recent
    start, end = (datetime.fromisoformat(old["window"][k].replace("Z", "+00:00")) for k in ("start", "end"))
    assert end - start == timedelta(days=2)


def test_readable_table(deployment):
    settings, filler = deployment
    readings = sum(stream(filler, 505, 2000, NOW - timedelta(minutes=3)))
    proc = bp_drift(settings, "--since", "1h")
    assert proc.returncode == 0, proc.stderr
    assert f"{readings:,} readings" in proc.stdout and "systolic_mm_hg" in proc.stdout and OFFSET_FLEET in proc.stdout


def test_cannot_compare_without_readings_in_the_window(deployment):
    settings, filler = deployment
    stream(filler, 506, 500, NOW - timedelta(days=3), patients=100)
    proc = bp_drift(settings, "--since", "24h")
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("bp drift: error: no readings ingested between")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_cannot_compare_without_a_champion(settings, tmp_path):
    settings = settings.with_(mlflow_tracking_uri=f"sqlite:///{tmp_path / 'empty.db'}")
    proc = bp_drift(settings)
    assert proc.returncode == 1
    # (MLflow itself logs that it creates the empty store's tables first.)
    assert proc.stderr.strip().splitlines()[-1] == ("bp drift: error: no champion for bp-anomaly-classifier yet: "
                                                    "nothing to compare with")


def test_cannot_compare_when_the_reference_data_is_missing(deployment, store):
    settings, filler = deployment
    stream(filler, 507, 500, NOW - timedelta(minutes=1), patients=100)
    parquet = Path(store["dataset"]) / "readings.parquet"
    moved = parquet.with_name("moved.parquet")
    parquet.rename(moved)
    try:
        proc = bp_drift(settings)
    finally:
        moved.rename(parquet)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("bp drift: error: reference data missing:")
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("since", ["yesterday", "0h", "-3h", "24"])
def test_a_bad_duration_is_a_usage_error(settings, since):
    proc = bp_drift(settings, f"--since={since}")
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("bp drift: error: not a duration")
