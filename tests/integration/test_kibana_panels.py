"""Every dashboard panel's query, run on the real index (real template, real documents).

Kibana cannot run here, so each panel is checked through its Elasticsearch equivalent
(``bp_core.kibana.panel_queries``): the documents are built the way the consumer builds
them (FHIR payloads through ``BatchRouter.route``, with a patient state for the readings
judged against their patient's history, written by ``ElasticsearchSink`` into an index
created from the strict template), and each panel's numbers must match what was indexed.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import NamedTuple

import msgspec
import numpy as np
import pytest

from bp_core import kibana, rules
from bp_core.consumer.batch import BatchRouter
from bp_core.consumer.state import PatientContext
from bp_core.context import PatientStore
from bp_core.fhir.build import observation_bytes
from bp_core.model.serving import ServedModel
from bp_core.rules import Thresholds
from bp_core.sinks.elasticsearch import ElasticsearchSink
from bp_core.sinks.es_template import ensure_index_template

NOW = datetime.now(timezone.utc).replace(microsecond=0)

# (patient, days ago, hours ago, systolic, diastolic): scored by the rules only
RULES_ONLY = [
    ("p-001", 0, 1, 190, 100),   # crisis (systolic > 180)
    ("p-001", 2, 3, 185, 125),   # crisis (both)
    ("p-002", 4, 2, 170, 125),   # crisis (diastolic > 120)
    ("p-003", 1, 5, 200, 130),   # crisis
    ("p-001", 0, 2, 150, 95),    # stage 2, high/high
    ("p-001", 1, 1, 145, 85),    # stage 2, systolic high only
    ("p-002", 3, 4, 160, 100),   # stage 2
    ("p-004", 5, 1, 142, 92),    # stage 2
    ("p-003", 0, 3, 85, 55),     # hypotension, low/low
    ("p-003", 2, 2, 88, 62),     # hypotension, systolic low only
    ("p-004", 3, 3, 100, 50),    # hypotension, diastolic low only
    ("p-002", 6, 1, 80, 50),     # hypotension, six days ago
    ("p-004", 1, 2, 150, 55),    # stage 2 *and* diastolic low: counts as hyper- and hypotension
    ("p-001", 0, 4, 118, 76),    # normal: archived, never indexed
    ("p-001", 10, 0, 170, 105),  # an anomaly outside the dashboard's 7 days
]
# (patient, days ago, hours ago, systolic, diastolic, model probability): scored by a model too
WITH_MODEL = [
    ("p-002", 2, 6, 135, 85, 0.83),   # stage 1: flagged by the model only
    ("p-003", 1, 1, 182, 110, 0.97),  # crisis: rules and model
    ("p-004", 4, 5, 95, 58, 0.42),    # hypotension: rules only, probability below threshold
    ("p-001", 3, 2, 150, 92, 0.66),   # stage 2: both
    ("p-002", 5, 3, 120, 78, 0.05),   # elevated, not an anomaly
]
# (patient, days ago, hours ago, systolic, diastolic): scored against the patient's history
# (baseline: the mean of the previous 7 days' readings, at least 5; rise/drop: +-20/10 mmHg)
WITH_CONTEXT = [
    *[("p-005", days, 8, 118, 76) for days in (6, 5, 4, 3, 2)],   # normal: its baseline
    ("p-005", 1, 8, 140, 80),    # rise from 118/76 (+22), no threshold crossed (140 is not > 140)
    *[("p-006", days, 9, 132, 84) for days in (6, 5, 4, 3, 2)],   # stage 1, normal: its baseline
    ("p-006", 1, 9, 108, 70),    # drop from 132/84 (-24/-14), inside the thresholds
    ("p-006", 0, 9, 165, 100),   # rise from 128/82 (+37), and both thresholds crossed
    *[("p-007", days, 7, 120, 75) for days in (13, 12, 11, 10, 9)],
    ("p-007", 8, 7, 150, 80),    # rise and systolic high, outside the dashboard's 7 days
]
# Each patient's home cuff (device fleet); p-004's readings name none.
DEVICE_MODELS = {"p-001": "ArmCuff 200", "p-002": "ArmCuff 100", "p-003": "HomeCheck Pro", "p-005": "ArmCuff 100",
                 "p-006": "HomeCheck Pro", "p-007": "WristCuff 50"}


class FixedProbabilities:
    """A served model's ``predict_proba`` (feature matrix -> 1-D probabilities), preset answers."""

    def __init__(self, probabilities):
        self.probabilities = np.asarray(probabilities, dtype=np.float64)

    def predict_proba(self, features):
        assert len(features) == len(self.probabilities)
        return self.probabilities


class Record(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes


def record(i: int, patient: str, days: int, hours: int, systolic: int, diastolic: int) -> Record:
    model = DEVICE_MODELS.get(patient)
    payload = observation_bytes(observation_id=f"obs-{i:03d}", patient_id=patient,
                                effective=NOW - timedelta(days=days, hours=hours),
                                systolic_mm_hg=systolic, diastolic_mm_hg=diastolic,
                                device_id=f"cuff-{patient}" if model else None, device_model=model)
    return Record("blood-pressure", 0, i, patient.encode(), payload)


@pytest.fixture
def indexed(es, es_index) -> list[dict]:
    """Index the demo anomalies the consumer's way; returns the documents inside the 7 days."""
    ensure_index_template(es, es_index)
    thresholds = Thresholds()
    router = BatchRouter(thresholds, 0.5)
    rules_only = router.route([record(i, *row) for i, row in enumerate(RULES_ONLY)], None, NOW)
    model = ServedModel("bp-anomaly-classifier", "3", FixedProbabilities([row[5] for row in WITH_MODEL]).predict_proba)
    with_model = router.route([record(100 + i, *row[:5]) for i, row in enumerate(WITH_MODEL)], model, NOW)
    context = PatientContext("changelog", reader=None)
    context.stores[0] = PatientStore()  # partition 0 assigned, nothing to restore
    with_context = router.route([record(200 + i, *row) for i, row in enumerate(WITH_CONTEXT)], None, NOW, context)
    sink = ElasticsearchSink(es, es_index)
    documents = []
    for outcome in (rules_only, with_model, with_context):
        sink.extend(outcome.anomaly_keys, outcome.anomaly_documents, outcome.anomaly_records)
        documents += [msgspec.json.decode(msgspec.json.encode(doc)) for doc in outcome.anomaly_documents]  # as ES sees them
    assert sink.flush() == []
    es.indices.refresh(index=es_index)
    assert es.count(index=es_index)["count"] == len(documents) == 22
    week_ago = NOW - timedelta(days=7)
    return [d for d in documents if datetime.fromisoformat(d["@timestamp"]) >= week_ago]


def run(es, es_index, title: str) -> dict:
    body = kibana.panel_queries(es_index)[title]
    return es.search(index=es_index, **body)


def by_key(response) -> dict:
    buckets = response["aggregations"]["bucket"]["buckets"]
    if isinstance(buckets, dict):  # filters
        return {key: bucket["doc_count"] for key, bucket in buckets.items()}
    return {bucket.get("key_as_string", bucket["key"]): bucket["doc_count"] for bucket in buckets}


def test_the_demo_documents_cover_every_panel(indexed):
    categories = Counter(d["category"] for d in indexed)
    assert {rules.CRISIS, rules.STAGE_1, rules.STAGE_2, rules.HYPOTENSION} <= set(categories)
    for d in indexed:  # the consumer's category is the rules' category
        assert d["category"] == rules.category(d["systolic"], d["diastolic"])
    assert len({d["patient_id"] for d in indexed}) == 6
    assert any(d["model_probability"] is None for d in indexed)
    assert any(d["detected_by"] == ["model"] for d in indexed)
    context = [d for d in indexed if {"rise_from_baseline", "drop_from_baseline"} & set(d["anomaly_types"])]
    assert [(d["patient_id"], d["anomaly_types"]) for d in sorted(context, key=lambda d: d["@timestamp"])] == [
        ("p-006", ["drop_from_baseline"]), ("p-005", ["rise_from_baseline"]),
        ("p-006", ["systolic_high", "diastolic_high", "rise_from_baseline"])]
    assert all(d["baseline_readings"] >= 5 and d["baseline_systolic"] is not None for d in context)
    assert any(d["device_model"] is None for d in indexed)


def test_every_panel_query_runs_and_returns_data(es, es_index, indexed):
    queries = kibana.panel_queries(es_index)
    assert set(queries) == {panel.title for panel in kibana.PANELS}
    for title, body in queries.items():
        response = es.search(index=es_index, **body)
        assert response["hits"]["total"]["value"] > 0, title
        if "aggs" in body:
            assert response["aggregations"], title


def test_total_and_crisis_metrics(es, es_index, indexed):
    assert run(es, es_index, "Anomalies")["hits"]["total"]["value"] == len(indexed) == 20  # two are older
    crises = [d for d in indexed if d["category"] == rules.CRISIS]
    assert len(crises) == 5
    assert run(es, es_index, "Hypertensive crises")["hits"]["total"]["value"] == len(crises)


def test_anomalies_per_patient(es, es_index, indexed):
    buckets = run(es, es_index, "Anomalies per patient (top 10)")["aggregations"]["bucket"]["buckets"]
    assert {b["key"]: b["doc_count"] for b in buckets} == Counter(d["patient_id"] for d in indexed)
    counts = [b["doc_count"] for b in buckets]
    assert counts == sorted(counts, reverse=True)


def test_category_breakdown(es, es_index, indexed):
    assert by_key(run(es, es_index, "Anomalies by AHA category")) == Counter(d["category"] for d in indexed)


def test_anomaly_type_breakdown_and_hypertension_vs_hypotension(es, es_index, indexed):
    types = Counter(t for d in indexed for t in d["anomaly_types"])
    assert by_key(run(es, es_index, "Anomalies by type")) == types
    hyper = sum(1 for d in indexed if {"systolic_high", "diastolic_high"} & set(d["anomaly_types"]))
    hypo = sum(1 for d in indexed if {"systolic_low", "diastolic_low"} & set(d["anomaly_types"]))
    assert by_key(run(es, es_index, "Hypertension vs hypotension")) == {"Hypertension": hyper, "Hypotension": hypo}
    assert (hyper, hypo) == (12, 6)  # 150/55 is both; the model-only reading and two context ones are neither


def test_crises_over_time(es, es_index, indexed):
    days = by_key(run(es, es_index, "Hypertensive crises per day"))
    crises = [d for d in indexed if d["category"] == rules.CRISIS]
    assert sum(days.values()) == len(crises)
    expected = Counter(datetime.fromisoformat(d["@timestamp"]).astimezone(timezone.utc).date() for d in crises)
    assert {datetime.fromisoformat(k.replace("Z", "+00:00")).date(): n for k, n in days.items() if n} == expected
    assert len(days) >= 7  # empty days are buckets too, across the whole time range


def test_model_probability_distribution(es, es_index, indexed):
    bins = by_key(run(es, es_index, "Model probability distribution"))
    scored = [d["model_probability"] for d in indexed if d["model_probability"] is not None]
    assert sum(bins.values()) == len(scored) == 4  # rules-only documents have no probability
    assert {k: n for k, n in bins.items() if n} == {"0.4–0.5": 1, "0.6–0.7": 1, "0.8–0.9": 1, "0.9–1.0": 1}


def test_which_layer_flagged(es, es_index, indexed):
    layers = Counter(layer for d in indexed for layer in d["detected_by"])
    assert by_key(run(es, es_index, "Which layer flagged")) == layers
    assert layers["model"] == 3 and layers["rules"] == 19


def test_latest_anomalies_newest_first(es, es_index, indexed):
    response = run(es, es_index, "Latest anomalies")
    newest_first = sorted(indexed, key=lambda d: d["@timestamp"], reverse=True)
    hits = [h["_source"] for h in response["hits"]["hits"]]
    assert [h["observation_id"] for h in hits] == [d["observation_id"] for d in newest_first]
    assert set(hits[0]) == {"observation_id", "@timestamp", *kibana.LATEST_COLUMNS}
    # The Lens form (one row per Observation, ordered by its time, last values) agrees.
    rows = response["aggregations"]["bucket"]["buckets"]
    assert [r["key"] for r in rows] == [d["observation_id"] for d in newest_first]
    first = rows[0]["last_values"]["hits"]["hits"][0]["_source"]
    assert first["systolic"] == newest_first[0]["systolic"]
    assert first["patient_id"] == newest_first[0]["patient_id"]


def test_rises_and_drops_from_baseline_per_day(es, es_index, indexed):
    response = run(es, es_index, "Rises and drops from baseline per day")
    series = response["aggregations"]["split"]["buckets"]
    assert set(series) == {"Rise", "Drop"}
    for name, anomaly_type in (("Rise", "rise_from_baseline"), ("Drop", "drop_from_baseline")):
        days = {datetime.fromisoformat(b["key_as_string"].replace("Z", "+00:00")).date(): b["doc_count"]
                for b in series[name]["bucket"]["buckets"] if b["doc_count"]}
        expected = Counter(datetime.fromisoformat(d["@timestamp"]).astimezone(timezone.utc).date()
                           for d in indexed if anomaly_type in d["anomaly_types"])
        assert days == expected and series[name]["doc_count"] == sum(expected.values())
    assert (series["Rise"]["doc_count"], series["Drop"]["doc_count"]) == (2, 1)  # the third rise is 8 days old
    assert response["hits"]["total"]["value"] == 3


def test_latest_rises_and_drops_show_each_value_beside_its_baseline(es, es_index, indexed):
    response = run(es, es_index, "Latest rises and drops from baseline")
    hits = [h["_source"] for h in response["hits"]["hits"]]
    assert [(h["patient_id"], h["systolic"], h["baseline_systolic"]) for h in hits] == [
        ("p-006", 165, 128.0), ("p-005", 140, 118.0), ("p-006", 108, 132.0)]
    assert hits[0]["baseline_readings"] == 6 and hits[1]["baseline_diastolic"] == 76.0
    assert {h["device_model"] for h in hits} == {"HomeCheck Pro", "ArmCuff 100"}
    rows = response["aggregations"]["bucket"]["buckets"]
    assert [r["key"] for r in rows] == [h["observation_id"] for h in hits]
    newest = rows[0]["last_values"]["hits"]["hits"][0]["_source"]
    assert (newest["systolic"], newest["baseline_systolic"]) == (165, 128.0)


def test_anomalies_by_device_fleet(es, es_index, indexed):
    fleets = by_key(run(es, es_index, "Anomalies by device fleet"))
    assert fleets == Counter(d["device_model"] for d in indexed if d["device_model"])
    assert sum(fleets.values()) < len(indexed)  # p-004's readings name no device
