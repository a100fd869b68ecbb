"""The pure half of `make demo` (infra/demo.py): summary computation and formatting."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

_SPEC = importlib.util.spec_from_file_location("bp_demo", Path(__file__).resolve().parents[2] / "infra" / "demo.py")
demo = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(demo)
CATEGORIES, build_summary, format_summary = demo.CATEGORIES, demo.build_summary, demo.format_summary
lag_by_partition, malformed_messages, parse_prometheus, throughput = (
    demo.lag_by_partition, demo.malformed_messages, demo.parse_prometheus, demo.throughput)

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
"""


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
