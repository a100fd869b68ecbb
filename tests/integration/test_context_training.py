"""Training both models against a real (temporary, SQLite) MLflow store, and serving them.

No Kafka or Elasticsearch: MLflow only.
"""

from __future__ import annotations

import mlflow
import numpy as np
import pytest

from bp_core.context import context_of_frame
from bp_core.features import CONTEXT_MODEL_FEATURES, FEATURE_NAMES, model_matrix
from bp_core.model.registry import CHALLENGER, client_for, get_alias_version
from bp_core.model.serving import ModelProvider, registered_feature_names
from bp_core.model.training import model_scores, train_and_register
from bp_core.settings import Settings
from bp_core.simulation.datasets import generate_dataset, load_dataset


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings().with_(data_dir=tmp_path / "data", mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                            model_alias=CHALLENGER)


def test_both_models_on_one_hold_out_and_the_context_model_registered(settings, tmp_path):
    data = generate_dataset(tmp_path / "set", patients=60, readings=12_000, seed=1)
    result = train_and_register(settings, data, seed=1)
    client = client_for(settings.mlflow_tracking_uri)
    assert result.feature_set == "context" and get_alias_version(client, settings.model_name, CHALLENGER) == "1"

    run = mlflow.MlflowClient(settings.mlflow_tracking_uri).get_run(result.run_id)
    metrics, params = run.data.metrics, run.data.params
    for key in ("pr_auc", "single_reading_pr_auc", "rules_pr_auc", "rules_with_context_flagged_rate",
                "single_reading_brier", "equal_recall", "false_alarms_at_equal_recall_context",
                "false_alarms_at_equal_recall_single_reading", "context_seconds"):
        assert key in metrics, key
    assert params["feature_set"] == "context" and params["features"] == ",".join(CONTEXT_MODEL_FEATURES)
    assert params["single_reading_features"] == ",".join(FEATURE_NAMES)
    # The context rules flag more readings than the thresholds alone (rises and drops inside the box).
    assert metrics["rules_with_context_flagged_rate"] > metrics["rules_flagged_rate"]
    # The point of it: better ranking, fewer false alarms at the same recall.
    assert metrics["pr_auc"] > metrics["single_reading_pr_auc"]
    assert metrics["false_alarms_at_equal_recall_context"] < metrics["false_alarms_at_equal_recall_single_reading"]
    tracking = mlflow.MlflowClient(settings.mlflow_tracking_uri)
    artifacts = {a.path for a in tracking.list_artifacts(result.run_id, "plots")}
    assert "plots/precision_recall.png" in artifacts

    tags = client.get_model_version(settings.model_name, "1").tags
    assert tags["feature_set"] == "context" and tags["dataset.scenario"] == "baseline"
    assert tags["features"] == ",".join(CONTEXT_MODEL_FEATURES)
    assert registered_feature_names(client, settings.model_name, "1") == CONTEXT_MODEL_FEATURES

    provider = ModelProvider(settings)
    provider.start()
    served = provider.current
    assert served.version == "1" and served.feature_names == CONTEXT_MODEL_FEATURES
    frame = load_dataset(data)
    context = context_of_frame(frame)
    systolic, diastolic = frame["systolic_mm_hg"].to_numpy(float), frame["diastolic_mm_hg"].to_numpy(float)
    probabilities = served.predict_proba(model_matrix(systolic, diastolic, context, served.feature_names))
    np.testing.assert_allclose(probabilities, model_scores(result.model, frame))  # the width tells the set
    # Readings without history (state off, or a new patient) are scored too.
    assert served.predict_proba(model_matrix(systolic[:3], diastolic[:3], None, served.feature_names)).shape == (3,)


def test_a_single_reading_model_can_be_registered_and_the_scenario_is_tagged(settings, tmp_path):
    data = generate_dataset(tmp_path / "set", patients=30, readings=4_000, seed=2, scenario="older-cohort")
    result = train_and_register(settings, data, seed=2, feature_set="single-reading")
    client = client_for(settings.mlflow_tracking_uri)
    tags = client.get_model_version(settings.model_name, result.model_version).tags
    assert tags["feature_set"] == "single-reading" and tags["dataset.scenario"] == "older-cohort"
    assert "context_pr_auc" in mlflow.MlflowClient(settings.mlflow_tracking_uri).get_run(result.run_id).data.metrics
    provider = ModelProvider(settings)
    provider.start()
    assert provider.current.feature_names == FEATURE_NAMES
    with pytest.raises(ValueError, match="unknown feature set"):
        train_and_register(settings, data, feature_set="everything")
