"""Shadow evidence (``bp_core.model.shadow``): the accumulator, the per-member sum, the
recorder's hand-over and its Prometheus view. Publishing to a real MLflow store is in
``tests/integration/test_promotion_gate.py``."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from bp_core.model.shadow import (BINS, ShadowEvidence, ShadowRecorder, champion_key, evidence_from_metrics,
                                  member_id, metric_key)
from bp_core.settings import Settings

RULES = np.array([1, 0, 0, 0, 1, 0], dtype=bool)
CHAMPION = np.array([0.9, 0.6, 0.2, 0.1, 0.3, 0.05])
CHALLENGER = np.array([0.95, 0.4, 0.7, 0.1, 0.2, 1.0])


def test_one_batch_counts_served_alerts_agreement_and_the_histogram():
    evidence = ShadowEvidence("3", "2")
    evidence.add(RULES, CHAMPION, CHALLENGER, 0.5)
    # served champion: [1, 1, 0, 0, 1, 0]; served challenger: [1, 0, 1, 0, 1, 1]
    assert (evidence.readings, evidence.champion_alerts, evidence.challenger_alerts) == (6, 3, 4)
    assert (evidence.both, evidence.champion_only, evidence.challenger_only) == (2, 1, 2)
    assert evidence.champion_alert_rate == pytest.approx(0.5)
    assert evidence.challenger_alert_rate == pytest.approx(4 / 6)
    assert evidence.agreement == pytest.approx(0.5)
    assert evidence.histogram == [0, 1, 1, 0, 1, 0, 0, 1, 0, 2]  # 1.0 falls in the last bin
    assert sum(evidence.histogram) == evidence.readings


def test_rules_only_serving_compares_the_challenger_with_the_rules():
    evidence = ShadowEvidence("1", None)
    evidence.add(RULES, None, CHALLENGER, 0.5)
    assert (evidence.champion_alerts, evidence.challenger_alerts, evidence.champion_only) == (2, 4, 0)


def test_batches_add_up_and_lengths_must_match():
    evidence = ShadowEvidence("3", "2")
    evidence.add(RULES, CHAMPION, CHALLENGER, 0.5)
    evidence.add(RULES, CHAMPION, CHALLENGER, 0.5)
    assert evidence.readings == 12 and evidence.both == 4
    with pytest.raises(ValueError):
        evidence.add(RULES[:3], CHAMPION, CHALLENGER, 0.5)


def test_the_reader_sums_the_latest_value_of_each_member_for_one_champion():
    first, second = ShadowEvidence("3", "2"), ShadowEvidence("3", "2")
    first.add(RULES, CHAMPION, CHALLENGER, 0.5)
    second.add(RULES, CHAMPION, CHALLENGER, 0.5)
    second.add(RULES, CHAMPION, CHALLENGER, 0.5)
    older = ShadowEvidence("3", "1")  # gathered while version 1 served: another comparison
    older.add(RULES, CHAMPION, CHALLENGER, 0.5)
    metrics = {"pr_auc": 0.93}
    for member, evidence in (("g.host.1.t0", first), ("g.host.2.t0", second), ("g.host.1.t9", older)):
        metrics.update({metric_key(evidence.champion_version, member, k): v for k, v in evidence.to_metrics().items()})
    total = evidence_from_metrics("3", "2", metrics)
    assert total.members == 2 and total.readings == 18 and total.challenger_only == 6
    assert total.histogram == [3 * count for count in first.histogram]
    assert evidence_from_metrics("3", "1", metrics).readings == 6
    assert evidence_from_metrics("3", None, metrics).readings == 0


def test_names_are_valid_mlflow_metric_keys():
    member = member_id("bp consumer/1", host="node:7", pid=42, started=0)
    assert member == "bp_consumer_1.node_7.42.19700101T000000"
    assert metric_key("12", member, "readings") == f"shadow/vs-v12/{member}/readings"
    assert champion_key(None) == "vs-rules"


def test_the_recorder_starts_new_evidence_when_either_version_changes():
    recorder = ShadowRecorder(Settings(), member="m")
    assert recorder.evidence() is None
    recorder.record("3", "2", RULES, CHAMPION, CHALLENGER)
    recorder.record("3", "2", RULES, CHAMPION, CHALLENGER)
    assert recorder.evidence().readings == 12
    recorder.record("4", "2", RULES, CHAMPION, CHALLENGER)
    current = recorder.evidence()
    assert (current.challenger_version, current.readings) == ("4", 6)
    assert set(recorder._dirty) == {("3", "2"), ("4", "2")}  # both still to publish


def test_an_unreachable_mlflow_keeps_the_evidence_for_the_next_attempt(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    recorder = ShadowRecorder(Settings(mlflow_tracking_uri="http://127.0.0.1:1"), member="m")
    recorder.record("3", "2", RULES, CHAMPION, CHALLENGER)
    assert recorder.publish_now() is False
    assert recorder.publish_errors == 1 and recorder._dirty[("3", "2")].readings == 6
    recorder.record("3", "2", RULES, CHAMPION, CHALLENGER)  # batches go on meanwhile
    assert recorder._dirty[("3", "2")].readings == 12


def test_prometheus_sees_the_current_evidence():
    registry = CollectorRegistry()
    recorder = ShadowRecorder(Settings(), member="m", registry=registry)
    text = generate_latest(registry).decode()
    assert "bp_shadow_publish_errors_total 0.0" in text and "bp_shadow_readings" not in text
    recorder.record("3", "2", RULES, CHAMPION, CHALLENGER)
    text = generate_latest(registry).decode()
    labels = 'challenger_version="3",champion_version="2"'
    assert f"bp_shadow_readings_total{{{labels}}} 6.0" in text
    assert f'bp_shadow_alerts_total{{{labels},model="challenger"}} 4.0' in text
    assert f'bp_shadow_agreement_total{{{labels},outcome="champion_only"}} 1.0' in text
    assert f'bp_shadow_alert_rate{{{labels},model="champion"}} 0.5' in text
    assert f'bp_shadow_challenger_probability_bucket{{{labels},le="0.5"}} 3.0' in text
    assert f'bp_shadow_challenger_probability_bucket{{{labels},le="+Inf"}} 6.0' in text
    assert f"bp_shadow_challenger_probability_count{{{labels}}} 6.0" in text
    assert len([line for line in text.splitlines() if "_bucket{" in line]) == BINS
