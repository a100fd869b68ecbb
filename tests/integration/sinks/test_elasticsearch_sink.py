"""The Elasticsearch sink against a real node: idempotent ids, strict template, per-item errors."""

from __future__ import annotations

import pytest

from bp_core.errors import SinkUnavailable
from bp_core.sinks.elasticsearch import ElasticsearchSink
from bp_core.sinks.es_template import ANOMALY_FIELDS, ensure_index_template


def doc(i: int, **extra) -> dict:
    return {"@timestamp": f"2026-01-01T00:00:{i % 60:02d}+00:00", "observation_id": f"obs-{i}",
            "patient_id": f"p{i % 4}", "systolic": 150.0 + i, "diastolic": 95.0, "category": "hypertension_stage_2",
            "anomaly_types": ["systolic_high", "diastolic_high"], "rule_anomaly": True, "model_anomaly": False,
            "model_probability": None, "model_name": None, "model_version": None, "detected_by": ["rules"],
            "ingested_at": "2026-01-01T00:01:00+00:00", **extra}


def test_template_is_explicit_and_replicas_zero(es, es_index):
    ensure_index_template(es, es_index)
    ensure_index_template(es, es_index)  # idempotent
    mapping = es.indices.get_mapping(index=es_index)[es_index]["mappings"]
    assert mapping["dynamic"] == "strict"
    assert set(mapping["properties"]) == set(ANOMALY_FIELDS)
    settings = es.indices.get_settings(index=es_index)[es_index]["settings"]["index"]
    assert settings["number_of_replicas"] == "0"
    assert es.cluster.health(index=es_index)["status"] == "green"


def test_an_index_created_elsewhere_is_searchable_once_ensured(es, es_index):
    # Another consumer created the index and did not wait for its shard to start.
    es.indices.create(index=es_index, wait_for_active_shards="0")
    ensure_index_template(es, es_index)
    assert es.cluster.health(index=es_index)["active_primary_shards"] == 1
    assert es.count(index=es_index)["count"] == 0


def test_replay_overwrites_instead_of_duplicating(es, es_index):
    ensure_index_template(es, es_index)
    sink = ElasticsearchSink(es, es_index)
    for _ in range(2):
        sink.extend([f"obs-{i}" for i in range(50)], [doc(i) for i in range(50)], [None] * 50)
        assert sink.flush() == []
    es.indices.refresh(index=es_index)
    assert es.count(index=es_index)["count"] == 50


def test_a_refused_document_is_handed_back_and_the_rest_is_written(es, es_index):
    ensure_index_template(es, es_index)
    sink = ElasticsearchSink(es, es_index)
    sink.extend(["good", "bad-field", "obs-3"], [doc(1), doc(2, unexpected_field=1), doc(3, systolic="not a number")],
                ["k-good", "k-bad", "k-not-a-number"])
    rejected = sink.flush()
    assert sorted(r.key for r in rejected) == ["k-bad", "k-not-a-number"]
    assert all("elasticsearch refused document" in r.reason for r in rejected)
    es.indices.refresh(index=es_index)
    assert es.count(index=es_index)["count"] == 1


def test_unreachable_elasticsearch_keeps_the_batch(es, es_index):
    from elasticsearch import Elasticsearch

    ensure_index_template(es, es_index)
    dead = Elasticsearch("http://127.0.0.1:1", request_timeout=2, max_retries=0)
    sink = ElasticsearchSink(dead, es_index)
    sink.extend(["obs-1", "obs-2"], [doc(1), doc(2)], [None, None])
    with pytest.raises(SinkUnavailable, match="bulk request failed"):
        sink.flush()
    sink.es = es  # Elasticsearch is back: the same sink writes what it kept
    assert sink.flush() == []
    es.indices.refresh(index=es_index)
    assert es.count(index=es_index)["count"] == 2


def test_an_overlong_observation_id_gets_a_stable_digest_id(es, es_index):
    ensure_index_template(es, es_index)
    sink = ElasticsearchSink(es, es_index)
    for _ in range(2):
        sink.extend(["x" * 600], [doc(3)], [None])
        assert sink.flush() == []
    es.indices.refresh(index=es_index)
    (hit,) = es.search(index=es_index)["hits"]["hits"]
    assert hit["_id"].startswith("sha256-")
