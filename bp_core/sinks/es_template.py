"""The explicit index template behind ``bp-anomalies`` (or ``BP_ES_INDEX``).

The mapping is ``strict``: a document with a field not listed here is refused by
Elasticsearch (and lands in the dead-letter topic) instead of silently widening the
mapping the Kibana dashboards rely on.
"""

from __future__ import annotations

ANOMALY_FIELDS: dict[str, dict] = {
    "@timestamp": {"type": "date"},                 # the Observation's effective time
    "observation_id": {"type": "keyword"},
    "patient_id": {"type": "keyword"},
    "systolic": {"type": "float"},
    "diastolic": {"type": "float"},
    "category": {"type": "keyword"},
    "anomaly_types": {"type": "keyword"},
    "rule_anomaly": {"type": "boolean"},
    "model_anomaly": {"type": "boolean"},
    "model_probability": {"type": "float"},
    "model_name": {"type": "keyword"},
    "model_version": {"type": "keyword"},
    "detected_by": {"type": "keyword"},
    "ingested_at": {"type": "date"},
    "status": {"type": "keyword"},
    "source": {
        "properties": {
            "topic": {"type": "keyword"},
            "partition": {"type": "integer"},
            "offset": {"type": "long"},
        }
    },
    "device_id": {"type": "keyword"},              # the Observation's measuring device
    "device_model": {"type": "keyword"},           # its model: the device fleet
    # The patient's context (bp_core.context): null without a baseline / history.
    "baseline_systolic": {"type": "float"},
    "baseline_diastolic": {"type": "float"},
    "baseline_readings": {"type": "integer"},
    "home_average_systolic": {"type": "float"},
    "home_average_diastolic": {"type": "float"},
    "home_average_readings": {"type": "integer"},
    "arv_systolic": {"type": "float"},
}


def index_template(index: str, *, replicas: int = 0, shards: int = 1) -> dict:
    """The composable index template body for ``index`` (matches ``index`` and ``index-*``)."""
    return {
        "index_patterns": [index, f"{index}-*"],
        "priority": 200,
        "template": {
            "settings": {
                "number_of_shards": shards,
                "number_of_replicas": replicas,
                "refresh_interval": "1s",
            },
            "mappings": {"dynamic": "strict", "properties": ANOMALY_FIELDS},
        },
        "_meta": {"managed_by": "bp-monitor", "description": "Blood-pressure anomalies, one document per FHIR Observation"},
    }


def ensure_index_template(es, index: str, *, replicas: int = 0, wait: str = "30s") -> None:
    """Create or update the template, then the index itself, so searches work from the start.

    Returns once the index's primary shard has started: an index exists (``HEAD`` says
    so) a moment before that, and a search in between fails with 503 "all shards failed".
    Creating waits for it, but the index may have been created by someone else meanwhile.
    Health "yellow" is no proof: a new index is yellow while its primary initializes.

    Raises:
        elasticsearch.ApiError: 408 when the shard has not started within ``wait``.
    """
    es.indices.put_index_template(name=index, **index_template(index, replicas=replicas))
    if not es.indices.exists(index=index):
        es.options(ignore_status=400).indices.create(index=index)  # 400: created meanwhile
    else:  # made by an earlier version: add the fields it lacks (a changed type is refused)
        es.indices.put_mapping(index=index, properties=ANOMALY_FIELDS)
    wait_until_searchable(es, index, wait)


def wait_until_searchable(es, index: str, wait: str = "30s") -> None:
    """Wait until ``index``'s primary shard has started (the template gives it one).

    Raises:
        elasticsearch.ApiError: 408 when it has not started within ``wait``.
    """
    es.cluster.health(index=index, wait_for_active_shards="1", timeout=wait)
