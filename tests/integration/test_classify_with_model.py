"""`bp classify` adds the promoted model's probability when a model is available."""

from __future__ import annotations

import json
import os
import subprocess

from tests.integration.helpers import BP, REPO

FIXTURE = str(REPO / "tests" / "fixtures" / "fhir" / "hl7-r4-observation-example-bloodpressure.json")


def classify(env_extra: dict, *args: str) -> list[dict]:
    env = {**os.environ, **env_extra}
    out = subprocess.run([BP, "classify", *args, FIXTURE], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_champion_and_exported_file_give_a_probability(settings, tmp_path):
    from bp_core.simulation.datasets import generate_dataset
    from bp_core.model.promotion import promote
    from bp_core.model.training import train_and_register

    env = {"MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri, "BP_DATA_DIR": str(settings.data_dir)}
    (record,) = classify(env)
    assert "model_probability" not in record  # no champion yet: rules only

    train_and_register(settings, generate_dataset(tmp_path / "d", patients=40, readings=4000, seed=1), seed=1)
    promote(settings, holdout_readings=4000)
    (record,) = classify(env)
    assert record["systolic"] == 107 and record["diastolic"] == 60
    assert 0.0 <= record["model_probability"] <= 1.0
    (rules_only,) = classify(env, "--no-model")
    assert "model_probability" not in rules_only

    exported = tmp_path / "bp_logreg.pkl"
    train = subprocess.run([BP, "train", "--data", str(tmp_path / "d"), "--export", str(exported)],
                           env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
    assert train.returncode == 0, train.stderr
    (from_file,) = classify({**env, "BP_MODEL_PATH": str(exported)})
    assert 0.0 <= from_file["model_probability"] <= 1.0
