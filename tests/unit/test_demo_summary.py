"""The pure half of `make demo` (infra/demo_summary.py): summary computation and formatting."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

INFRA = Path(__file__).resolve().parents[2] / "infra"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bp_{name}", INFRA / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo = _load("demo_summary")
malformed_messages = _load("demo").malformed_messages
CATEGORIES, build_summary, format_summary = demo.CATEGORIES, demo.build_summary, demo.format_summary
lag_by_partition, parse_prometheus, throughput = demo.lag_by_partition, demo.parse_prometheus, demo.throughput
prometheus_samples, serving_version, shadow_readings, model_state = (
    demo.prometheus_samples, demo.serving_version, demo.shadow_readings, demo.model_state)
tally_alerts, alert_lines, drift_findings = demo.tally_alerts, demo.alert_lines, demo.drift_findings

METRICS_TEXT = """\
# HELP bp_messages_consumed_total Kafka messages consumed
# TYPE bp_messages_consumed_total counter
bp_messages_consumed_total 3004.0
bp_messages_consumed_created 1.7e+09
# HELP bp_anomalies_total Anomalies indexed into Elasticsearch
bp_anomalies_total{detected_by="rules"} 1000.0
bp_anomalies_total{detected_by="rules,model"} 160.0
bp_batch_seconds_bucket{le="0.5"} 3.0
bp_batch_seconds_count 4.0
bp_batch_seconds_sum 1.5
bp_model_info{name="bp-anomaly-classifier",version="2"} 1.0
bp_shadow_readings_total{challenger_version="3",champion_version="2"} 4321.0
"""

RISK_ASSESSMENT = {
    "resourceType": "RiskAssessment", "id": "ra-1", "status": "final",
    "method": {"coding": [{"system": "urn:bp-monitor:detection-method", "code": "rules+model"}]},
    "subject": {"reference": "Patient/p-7"}, "occurrenceDateTime": "2026-03-01T07:42:10+00:00",
    "performer": {"reference": "Device/bp-anomaly-classifier.2"},
    "basis": [{"reference": "Observation/o-1"}],
    "prediction": [
        {"outcome": {"coding": [{"code": "anomaly"}]}, "probabilityDecimal": 0.9873,
         "qualitativeRisk": {"coding": [{"code": "high"}]}, "rationale": "186/112 mmHg, AHA category hypertensive crisis"},
        {"outcome": {"coding": [{"code": "systolic_high"}]}},
        {"outcome": {"coding": [{"code": "rise_from_baseline"}]}},
    ],
}


def facts(**overrides) -> dict:
    base = {
        "topic": "blood-pressure",
        "es_index": "bp-anomalies",
        "archive_dir": "data/archive",
        "topic_messages": 3004,
        "anomaly_total": 1160,
        "anomaly_categories": {"hypertension_stage_2": 700, "hypotension": 440, "hypertensive_crisis": 10,
                               "hypertension_stage_1": 10},
        "anomaly_layers": {"rules": 1150, "model": 1100},
        "normal_categories": {"normal": 1000, "elevated": 400, "hypertension_stage_1": 400, "hypertension_stage_2": 40},
        "dlq": {"count": 4, "first_reason": "not JSON: invalid literal"},
        "champion": {"name": "bp-anomaly-classifier", "version": "1", "run_id": "abc",
                     "metrics": {"pr_auc": 0.92, "roc_auc": 0.95, "recall": 0.81, "crisis_recall": 1.0,
                                 "hypotension_recall": float("nan")},
                     "rules_metrics": {"pr_auc": 0.73, "roc_auc": 0.87, "recall": 0.84, "crisis_recall": 1.0,
                                       "hypotension_recall": 0.76}},
        "challenger": {"version": "2", "decision": "rejected", "reason": "pr_auc gain +0.0000 below margin 0.002"},
        "throughput": {"messages": 3004, "seconds": 1.5, "per_second": 3004 / 1.5},
        "demo": {"produced": 3000, "malformed": 4, "e2e_seconds": 3.2},
        "consumer": {"pid": 42, "log": ".stack/demo-consumer.log", "reused": False, "metrics_port": 9108,
                     "pid_file": ".stack/demo-consumer.pid"},
        "paths": {"airflow_home": ".airflow-demo", "mlflow_uri": "sqlite:///data/mlflow/mlflow.db"},
        "anomaly_types": {"systolic_high": 690, "diastolic_low": 400, "rise_from_baseline": 90, "drop_from_baseline": 30},
        "context": {"with_baseline": 1000, "context_only": 25},
        "time_range": {"from": "now-7d", "to": "now", "in_range": 1160, "oldest": "2026-02-25T08:00:00.000Z",
                       "newest": "2026-03-01T07:59:00.000Z"},
        "alerts": {"topic": "blood-pressure.alerts", "messages": 1200, "risk_assessments": 1160,
                   "by_type": {"RiskAssessment": {"final": 1160}, "Flag": {"active": 30, "inactive": 8},
                               "Device": {"active": 2}},
                   "flags": {"active": 30, "inactive": 8}, "sustained_patients": 22, "example": RISK_ASSESSMENT},
        "serving": "1",
    }
    base.update(overrides)
    return base


def test_parse_prometheus_sums_label_sets_and_skips_comments():
    values = parse_prometheus(METRICS_TEXT)
    assert values["bp_messages_consumed_total"] == 3004
    assert values["bp_anomalies_total"] == 1160
    assert values["bp_batch_seconds_sum"] == 1.5
    assert values["bp_batch_seconds_bucket"] == 3
    assert not any(name.startswith("#") for name in values)


def test_throughput_is_the_delta_between_two_scrapes():
    before = {"bp_messages_consumed_total": 1000.0, "bp_batch_seconds_sum": 0.5}
    after = {"bp_messages_consumed_total": 4004.0, "bp_batch_seconds_sum": 2.0}
    result = throughput(before, after)
    assert result["messages"] == 3004
    assert math.isclose(result["seconds"], 1.5)
    assert math.isclose(result["per_second"], 3004 / 1.5)


def test_throughput_without_a_before_scrape_or_processing_time():
    assert throughput(None, {"bp_messages_consumed_total": 10.0, "bp_batch_seconds_sum": 2.0})["per_second"] == 5
    assert throughput({}, {})["per_second"] is None


def test_lag_counts_uncommitted_partitions_from_their_beginning():
    end = {0: 100, 1: 50, 2: 0}
    assert lag_by_partition(end, {0: 100, 1: 50}, {0: 0, 1: 0, 2: 0}) == {0: 0, 1: 0, 2: 0}
    assert lag_by_partition(end, {0: 90}, {0: 0, 1: 10, 2: 0}) == {0: 10, 1: 40, 2: 0}
    assert lag_by_partition({0: 5}, {0: None}, {0: 0}) == {0: 5}


def test_build_summary_merges_anomalies_and_normals_by_category():
    summary = build_summary(facts())
    assert summary["anomalies"] == 1160
    assert summary["normals"] == 1840
    assert summary["readings"] == 3000
    assert summary["rejects"] == 4
    rows = {row["category"]: row for row in summary["categories"]}
    assert [row["category"] for row in summary["categories"]] == list(CATEGORIES)  # each once, in order
    assert rows["hypertension_stage_1"] == {"category": "hypertension_stage_1", "label": "Hypertension stage 1",
                                            "total": 410, "anomalies": 10, "normals": 400, "share": 410 / 3000}
    assert rows["hypertensive_crisis"]["total"] == 10
    assert sum(row["total"] for row in summary["categories"]) == summary["readings"]


def test_build_summary_splits_layers_into_rules_model_both():
    summary = build_summary(facts())
    # 1150 rules + 1100 model over 1160 documents: 1090 flagged by both.
    assert summary["layers"] == {"rules_only": 60, "model_only": 10, "both": 1090}


def test_build_summary_accounts_for_every_message():
    assert build_summary(facts())["consistent"] is True
    assert build_summary(facts())["accounted"] == 3004
    assert build_summary(facts(topic_messages=3010))["consistent"] is False


def test_build_summary_keeps_an_unknown_category():
    summary = build_summary(facts(normal_categories={"normal": 5, "unknown": 1}))
    assert summary["categories"][-1]["category"] == "unknown"


def test_format_summary_shows_counts_models_and_how_to_open_the_uis():
    text = format_summary(build_summary(facts()))
    assert "3,004 messages in total" in text
    assert "earlier runs" in text
    assert "Anomalies indexed in Elasticsearch (bp-anomalies): 1,160" in text
    assert "rules only 60, model only 10, both 1,090" in text
    assert "Normal readings archived (data/archive): 1,840" in text
    assert "Rejected to the DLQ (blood-pressure.dlq): 4; first reason: not JSON" in text
    assert "all 3,004 messages accounted for" in text
    assert "Champion model: bp-anomaly-classifier v1" in text
    assert "pr_auc                    0.9200      0.7300" in text
    assert "hypotension_recall           n/a      0.7600" in text
    assert "challenger v2: rejected by the gate (champion stays v1)" in text
    assert "reason: pr_auc gain" in text
    assert "= 2,003 msg/s" in text
    assert "pid 42 (started by this demo)" in text
    assert "airflow standalone" in text and "localhost:8080" in text
    assert "simple_auth_manager_passwords.json.generated" in text
    assert "mlflow ui --backend-store-uri sqlite:///data/mlflow/mlflow.db" in text
    assert "kafka-docker-compose.yml" in text
    assert "localhost:9108/metrics" in text
    assert "make stack-down" in text


def test_format_summary_without_champion_or_challenger_decision():
    text = format_summary(build_summary(facts(champion=None,
                                              challenger={"version": "1", "decision": None, "reason": None},
                                              throughput={})))
    assert "Champion model: none (the consumer runs rules-only)" in text
    assert "challenger v1: not evaluated" in text
    assert "msg/s" not in text


def test_format_summary_flags_unaccounted_messages():
    text = format_summary(build_summary(facts(topic_messages=4000)))
    assert "WARNING: only 3,004 of 4,000 messages accounted for" in text


def test_malformed_messages_are_all_rejected_by_the_parser():
    from bp_core.fhir.parse import parse_payload
    from bp_core.reading import Reading

    messages = malformed_messages()
    assert len(messages) >= 3
    for _key, value in messages:
        results = list(parse_payload(value))
        assert results and all(type(result) is not Reading for result in results), value


def test_prometheus_samples_keep_labels():
    samples = prometheus_samples(METRICS_TEXT)
    assert ("bp_model_info", {"name": "bp-anomaly-classifier", "version": "2"}, 1.0) in samples
    assert serving_version(samples) == "2"
    assert serving_version(prometheus_samples('bp_model_info{name="none",version="rules-only"} 1.0')) is None
    assert shadow_readings(samples, "3", "2") == 4321
    assert shadow_readings(samples, "3", None) == 0 and shadow_readings(samples, "4", "2") == 0


def test_model_state_follows_the_consumers_log():
    name = "bp-anomaly-classifier"
    log = ["... starting with {\"topic\": \"blood-pressure\"}",
           f"... loaded {name} version 2 ({name}@challenger)",
           f"... serving {name} version 1 ({name}@champion)"]
    assert model_state(log, name) == "2"
    assert model_state(log + [f"... loaded {name} version 3 ({name}@challenger), was version 2"], name) == "3"
    assert model_state(log + [f"... no {name}@challenger any more: dropped version 2"], name) is None
    assert model_state(log + ["... starting with {}"], name) is None  # a restarted consumer loads again


def alert_messages(*resources):
    """(key, value) messages of the alerts topic, in order."""
    return [(b"p-7", json.dumps(resource).encode()) for resource in resources]


def test_tally_alerts_counts_types_distinct_assessments_and_patients_in_sustained_hypertension():
    flag = {"resourceType": "Flag", "status": "active", "subject": {"reference": "Patient/p-7"}}
    rules_only = dict(RISK_ASSESSMENT, id="ra-2", prediction=[{"outcome": {"coding": [{"code": "anomaly"}]}}])
    tally = tally_alerts(alert_messages(
        {"resourceType": "Device", "status": "active", "id": "bp-anomaly-classifier.2"},
        RISK_ASSESSMENT, RISK_ASSESSMENT,  # a replay republishes the same id
        rules_only,
        flag, dict(flag, subject={"reference": "Patient/p-8"}),
        dict(flag, status="inactive"),  # p-7's episode ended
        dict(RISK_ASSESSMENT, id="ra-1", status="entered-in-error", prediction=None)))
    assert tally["messages"] == 8
    assert tally["by_type"] == {"Device": {"active": 1}, "RiskAssessment": {"final": 3, "entered-in-error": 1},
                                "Flag": {"active": 2, "inactive": 1}}
    assert tally["risk_assessments"] == 2
    assert tally["flags"] == {"active": 2, "inactive": 1} and tally["sustained_patients"] == 1
    assert tally["example"]["id"] == "ra-1"  # scored by a model and naming a context anomaly, over a later one
    assert tally_alerts([])["example"] is None and tally_alerts([])["sustained_patients"] == 0


def test_alert_lines_show_one_assessment_compactly_without_identities():
    lines = alert_lines(RISK_ASSESSMENT)
    text = "\n".join(lines)
    assert len(lines) == 3
    assert "RiskAssessment ra-1 (final): Patient/p-7, basis Observation/o-1" in lines[0]
    assert "outcome: systolic_high, rise_from_baseline; P(anomaly) 0.9873; qualitativeRisk high" in text
    assert "method rules+model, performer Device/bp-anomaly-classifier.2" in text
    assert "186/112 mmHg" in text
    assert "name" not in text.lower()


def test_build_summary_counts_the_patient_context():
    context = build_summary(facts())["context"]
    assert context == {"rises": 90, "drops": 30, "with_baseline": 1000, "context_only": 25, "sustained_patients": 22}


def test_format_summary_shows_alerts_context_time_range_and_serving_model():
    text = format_summary(build_summary(facts()))
    assert "Kibana's default time range (now-7d .. now): 1,160 of 1,160 anomalies" in text
    assert "(effective times 2026-02-25 08:00 UTC .. 2026-03-01 07:59 UTC)" in text
    assert "rises from baseline 90, drops 30 (25 of them crossed no threshold" in text
    assert "patients in sustained hypertension now" in text and ": 22 (Flags: 30 active, 8 inactive)" in text
    assert "Alerts on blood-pressure.alerts (FHIR R4, key = patient id): 1,200 messages" in text
    assert "RiskAssessment 1,160 (final 1,160); Flag 38 (active 30, inactive 8); Device 2 (active 2)" in text
    assert "1,160 distinct RiskAssessments for 1,160 anomalies (one each)" in text
    assert "e.g. RiskAssessment ra-1 (final)" in text
    assert "The consumer serves now: v1" in text


def test_format_summary_shows_the_live_evidence_a_decision_used():
    challenger = {"version": "2", "decision": "deferred", "reason": "not enough live evidence",
                  "champion_version": "1", "min_shadow_readings": 5000,
                  "evidence": {"readings": 1000, "champion_alerts": 400, "challenger_alerts": 410,
                               "champion_version": "1"}}
    text = format_summary(build_summary(facts(challenger=challenger)))
    assert "This demo's challenger v2: deferred (not enough live evidence yet" in text
    assert "live shadow evidence: 1,000 readings scored by v2 beside v1 while it served (the gate needs 5,000" in text
    assert "served alert rate: champion 40.0%, challenger 41.0%" in text
    off = format_summary(build_summary(facts(challenger=dict(challenger, evidence=None, min_shadow_readings=0,
                                                             decision="promoted"))))
    assert "not required (BP_GATE_MIN_SHADOW_READINGS=0)" in off


DRIFT_REPORT = {
    "drift": True, "window": {"start": "a", "end": "b", "readings": 2000},
    "reference": {"model_version": "1", "dataset_digest": "8c1f"},
    "features": {"systolic_mm_hg": {"score": 0.05, "threshold": 0.1, "drift": False},
                 "alert_rate": {"score": 0.2, "threshold": 0.1, "drift": True}},
    "segments": {
        "HomeCheck Pro": {"drift": True, "features": {"systolic_mm_hg": {"score": 0.75, "threshold": 0.3, "drift": True},
                                                      "diastolic_mm_hg": {"score": 0.5, "threshold": 0.3, "drift": True}}},
        "ArmCuff 100": {"drift": True, "features": {"systolic_mm_hg": {"score": 0.1, "threshold": 0.3, "drift": False},
                                                    "arv_systolic_mm_hg": {"score": 0.4, "threshold": 0.3, "drift": True}}},
        "ArmCuff 200": {"drift": False, "features": {"systolic_mm_hg": {"score": 0.1, "threshold": 0.3, "drift": False}}},
    },
}


def test_drift_findings_name_the_fleet_whose_measurements_moved():
    findings = drift_findings(DRIFT_REPORT)
    assert findings["measured_fleets"] == {"HomeCheck Pro": [("systolic_mm_hg", 0.75, 0.3), ("diastolic_mm_hg", 0.5, 0.3)]}
    assert findings["drifted"] == {"overall": 1, "HomeCheck Pro": 2, "ArmCuff 100": 1}


def test_format_summary_shows_the_drift_loop():
    drift = {"scenario": "cuff-offset", "switched_at": "2026-03-01T08:00:00Z", "since": "40s", "detect_readings": 2000,
             "shadow_readings": 5000, "report": DRIFT_REPORT, "signalled": True, "seconds": 151.2,
             "data": {"path": "data/training/2026-03-01T0801-drift", "patients": 300, "readings": 30000},
             "challenger": {"version": "3", "decision": "promoted", "reason": "better", "holdout_scenario": "cuff-offset",
                            "min_shadow_readings": 5000, "champion_version": "3",
                            "evidence": {"readings": 5000, "champion_alerts": 2100, "challenger_alerts": 2000,
                                         "champion_version": "1"}}}
    text = format_summary(build_summary(facts(drift=drift, serving="3")))
    assert "Drift loop (--drift, 151 s): the stream switched to the cuff-offset world at 2026-03-01T08:00:00Z" in text
    assert "bp drift --since 40s: drift found in 2,000 readings, against the training data of v1" in text
    assert "measured pressures drifted in: HomeCheck Pro (systolic_mm_hg 0.75 > 0.30, diastolic_mm_hg 0.50 > 0.30)" in text
    assert "bp_monitor_drift: drift recorded in MLflow (experiment bp-drift) and bp_drift_detected updated" in text
    assert "bp_train_model on fresh cuff-offset data (30,000 readings of 300 patients" in text
    assert "bp_promote_model: challenger v3: promoted" in text
    assert "hold-out simulated in the cuff-offset world" in text
    assert "5,000 readings scored by v3 beside v1" in text
    assert "The consumer serves now: v3" in text
