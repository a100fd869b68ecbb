"""The model lifecycle against a real (temporary, SQLite) MLflow store.

train -> 'challenger' -> promote -> 'champion' + tags -> served; a shuffled-label model
is kept out by the rules; a worse model is rejected; an as-good one is promoted and picked
up by ``maybe_refresh``; rollback; a provider following 'challenger'; and the provider's
never-raise promises (no champion, unreachable tracking server). The gate's own cases, on
SQLite and a tracking server: test_promotion_gate.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest

from bp_core.simulation.datasets import generate_dataset, load_dataset
from bp_core.errors import ModelUnavailable
from bp_core.features import feature_matrix
from bp_core.model.promotion import promote, rollback
from bp_core.model.registry import CHALLENGER, CHAMPION, PREVIOUS_CHAMPION, client_for, get_alias_version
from bp_core.model.serving import ModelProvider
from bp_core.model.training import EXPERIMENT_NAME, train_and_register

PATIENTS, READINGS, HOLDOUT = 50, 5_000, 5_000


class FakeClock:
    """A monotonic clock the test moves by hand (no sleeping)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _aliases(settings) -> dict[str, str | None]:
    client = client_for(settings.mlflow_tracking_uri)
    return {alias: get_alias_version(client, settings.model_name, alias)
            for alias in (CHALLENGER, CHAMPION, PREVIOUS_CHAMPION)}


def _tags(settings, version: str) -> dict[str, str]:
    return client_for(settings.mlflow_tracking_uri).get_model_version(settings.model_name, version).tags


def _shuffled_labels(source: Path, target: Path) -> Path:
    """The same readings with labels shuffled: a model that learns nothing."""
    frame = load_dataset(source)
    frame["label"] = np.random.default_rng(0).permutation(frame["label"].to_numpy())
    target.mkdir(parents=True)
    frame.to_parquet(target / "readings.parquet")
    return target


def test_train_promote_serve_reject_promote_rollback(settings, tmp_path):
    settings = settings.with_(gate_min_shadow_readings=0)  # no consumer here: live evidence in test_promotion_gate
    good = generate_dataset(tmp_path / "good", patients=PATIENTS, readings=READINGS, seed=1)
    clock = FakeClock()

    # 1. a model trained on shuffled labels: no champion, and it does not beat the rules.
    shuffled = train_and_register(settings, _shuffled_labels(good, tmp_path / "shuffled"), seed=1)
    assert shuffled.model_version == "1" and _aliases(settings)[CHALLENGER] == "1"
    decision = promote(settings, holdout_readings=HOLDOUT)
    assert decision.decision == "rejected" and "does not beat the rules alone" in decision.reason
    assert _aliases(settings)[CHAMPION] is None

    # 2. a real model: it beats the rules alone, so it becomes the first champion.
    first = train_and_register(settings, good, seed=1)
    assert first.model_version == "2"
    assert first.metrics["pr_auc"] > first.metrics["positive_rate"]
    assert {"pr_auc", "crisis_recall", "hypotension_recall"} <= set(first.rules_metrics)

    run = mlflow.MlflowClient(settings.mlflow_tracking_uri).get_run(first.run_id)
    assert "rules_pr_auc" in run.data.metrics and "pr_auc" in run.data.metrics
    assert run.data.params["seed"] == "1" and run.data.params["class_weight"] == "None"
    assert run.inputs.dataset_inputs and run.data.tags["dataset.digest"]
    artifacts = {a.path for a in mlflow.MlflowClient(settings.mlflow_tracking_uri).list_artifacts(first.run_id, "plots")}
    assert artifacts == {"plots/confusion_matrix.png", "plots/calibration.png", "plots/precision_recall.png"}
    experiment = mlflow.MlflowClient(settings.mlflow_tracking_uri).get_experiment_by_name(EXPERIMENT_NAME)
    assert Path(settings.data_dir).resolve().as_uri() in experiment.artifact_location

    # Promotion and serving run in other processes: they must not rely on the global
    # tracking/registry URI that training set in this one.
    decoy = f"sqlite:///{tmp_path / 'decoy.db'}"
    mlflow.set_tracking_uri(decoy)
    mlflow.set_registry_uri(decoy)

    decision = promote(settings, holdout_readings=HOLDOUT)
    assert decision.promoted and decision.reason.startswith("no champion; the challenger beats the rules alone")
    assert _aliases(settings) == {CHALLENGER: "2", CHAMPION: "2", PREVIOUS_CHAMPION: None}
    tags = _tags(settings, "2")
    assert tags["promotion.decision"] == "promoted" and tags["promotion.champion_version"] == "none"
    assert tags["promotion.state"] == "done" and tags["promotion.decided_at"]
    record = json.loads(tags["promotion.record"])
    assert record["challenger_metrics"]["pr_auc"] == pytest.approx(decision.challenger_metrics["pr_auc"])
    assert record["champion_metrics"] is None and record["rules_metrics"]["served_f1"] > 0
    assert promote(settings, holdout_readings=HOLDOUT).decision == "unchanged"

    provider = ModelProvider(settings, refresh_seconds=30, clock=clock)
    provider.start()
    assert provider.current is not None
    assert (provider.current.name, provider.current.version) == (settings.model_name, "2")
    probabilities = provider.current.predict_proba(feature_matrix(np.array([120.0, 200.0]), np.array([78.0, 125.0])))
    assert probabilities.shape == (2,) and probabilities[0] < 0.5 < probabilities[1]
    following = ModelProvider(settings, refresh_seconds=30, clock=clock, alias=CHALLENGER)  # as shadow scoring does
    following.start()
    assert following.current.version == "2"

    # 3. a heavily regularised model: worse than the champion, rejected; champion unchanged.
    worse = train_and_register(settings, good, seed=1, C=1e-4)
    assert worse.model_version == "3"
    decision = promote(settings, holdout_readings=HOLDOUT)
    assert decision.decision == "rejected" and decision.reason.startswith("on the hold-out:")
    assert decision.challenger_metrics["brier"] > decision.champion_metrics["brier"] + settings.gate_brier_margin
    assert _aliases(settings) == {CHALLENGER: "3", CHAMPION: "2", PREVIOUS_CHAMPION: None}
    tags = _tags(settings, "3")
    assert tags["promotion.decision"] == "rejected" and tags["promotion.champion_version"] == "2"
    assert "FAILS: brier" in tags["promotion.checks"]
    clock.now += 31
    assert provider.maybe_refresh() is False and provider.current.version == "2"
    assert following.maybe_refresh() is True and following.current.version == "3"

    # 4. the same pipeline again, at margin 0: as good, so promoted; previous-champion kept,
    #    picked up by the provider.
    again = train_and_register(settings, good, seed=1)
    assert again.model_version == "4"
    decision = promote(settings, margin=0.0, holdout_readings=HOLDOUT)
    assert decision.promoted, decision.reason
    assert _aliases(settings) == {CHALLENGER: "4", CHAMPION: "4", PREVIOUS_CHAMPION: "2"}

    assert provider.maybe_refresh() is False  # not due yet: no registry call
    clock.now += 31
    assert provider.maybe_refresh() is True
    assert provider.current.version == "4"
    assert provider.maybe_refresh() is False  # just checked

    # 5. rollback: champion back to 2; version 4 stays out; nothing left to roll back to.
    decision = rollback(settings, reason="too many alerts overnight")
    assert decision.decision == "rolled_back" and decision.champion_version == "2"
    assert _aliases(settings) == {CHALLENGER: "4", CHAMPION: "2", PREVIOUS_CHAMPION: None}
    assert _tags(settings, "4")["rollback.to"] == "2"
    assert _tags(settings, "4")["rollback.reason"] == "too many alerts overnight"
    assert promote(settings, margin=0.0, holdout_readings=HOLDOUT).decision == "rejected"
    clock.now += 31
    assert provider.maybe_refresh() is True and provider.current.version == "2"
    with pytest.raises(ModelUnavailable, match="nothing to roll back to"):
        rollback(settings)

    # 6. the challenger alias removed: a provider following it drops its model.
    client_for(settings.mlflow_tracking_uri).delete_registered_model_alias(settings.model_name, CHALLENGER)
    clock.now += 31
    assert following.maybe_refresh() is True and following.current is None

    # 7. the model cache: a fresh provider loads version 2 without downloading again.
    cached = Path(settings.data_dir) / "mlflow" / "model-cache" / settings.model_name / "2" / "MLmodel"
    assert cached.exists()


def test_no_champion_means_rules_only(settings):
    provider = ModelProvider(settings)
    provider.start()
    assert provider.current is None
    assert provider.maybe_refresh() is False


def test_promote_without_challenger_is_a_clear_error(settings):
    with pytest.raises(ModelUnavailable, match="no 'challenger'"):
        promote(settings)


def test_unreachable_tracking_server_fails_fast_and_never_raises(settings, monkeypatch):
    # Start from MLflow's own defaults (7 retries, 120 s): the provider must lower them.
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.setenv(name, "x")  # records the original value for restoration
        monkeypatch.delenv(name)
    clock = FakeClock()
    provider = ModelProvider(settings.with_(mlflow_tracking_uri="http://127.0.0.1:1"), clock=clock)
    started = time.monotonic()
    provider.start()
    clock.now += 31
    assert provider.maybe_refresh() is False
    assert provider.current is None
    assert time.monotonic() - started < 10


def test_serves_a_joblib_file_and_reloads_it_when_it_changes(settings, tmp_path):
    import joblib
    from sklearn.dummy import DummyClassifier

    path = tmp_path / "bp_logreg.pkl"
    joblib.dump(DummyClassifier(strategy="prior").fit(np.zeros((4, 1)), [0, 0, 0, 1]), path)
    clock = FakeClock()
    provider = ModelProvider(settings.with_(model_path=path), refresh_seconds=5, clock=clock)
    provider.start()
    first = provider.current
    assert first.name == "file:bp_logreg.pkl" and len(first.version) == 12
    assert first.predict_proba(feature_matrix(np.array([120.0]), np.array([80.0]))).tolist() == [0.25]

    joblib.dump(DummyClassifier(strategy="prior").fit(np.zeros((2, 1)), [0, 1]), path)
    clock.now += 6
    assert provider.maybe_refresh() is True
    assert provider.current.version != first.version
    assert provider.current.predict_proba(feature_matrix(np.array([120.0]), np.array([80.0]))).tolist() == [0.5]

    path.unlink()
    clock.now += 6
    assert provider.maybe_refresh() is False and provider.current is not None  # keeps serving
