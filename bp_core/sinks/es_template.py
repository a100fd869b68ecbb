"""The explicit index template behind ``bp-anomalies`` (or ``BP_ES_INDEX``).

The mapping is ``strict``: a document with a field not listed here is refused by
Elasticsearch (and lands in the dead-letter topic) instead of silently widening the
mapping the Kibana dashboards rely on.
"""

from __future__ import annotations

import logging

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


# An anomaly is searchable (Kibana, bp drift) at the index's next refresh. 100 ms keeps
# produce-to-searchable p99 within 250 ms at 1,000 readings/s; Elasticsearch's 1 s
# default does not (figures and cost: docs/benchmarks.md). Change it on a live index with
# the index settings API; the template applies to indices created after.
REFRESH_INTERVAL = "100ms"


def index_template(index: str, *, replicas: int = 0, shards: int = 1) -> dict:
    """The composable index template body for ``index`` (matches ``index`` and ``index-*``)."""
    return {
        "index_patterns": [index, f"{index}-*"],
        "priority": 200,
        "template": {
            "settings": {
                "number_of_shards": shards,
                "number_of_replicas": replicas,
                "refresh_interval": REFRESH_INTERVAL,
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
    else:  # made by an earlier version: add the fields it lacks
        added = es.options(ignore_status=400).indices.put_mapping(index=index, properties=ANOMALY_FIELDS)
        if added.meta.status == 400:  # a field of another type: its documents go to the DLQ, with the reason
            logging.getLogger(__name__).warning("index %s keeps its mapping: %s", index, added.body.get("error"))
    wait_until_searchable(es, index, wait)


def wait_until_searchable(es, index: str, wait: str = "30s") -> None:
    """Wait until ``index``'s primary shard has started (the template gives it one).

    Raises:
        elasticsearch.ApiError: 408 when it has not started within ``wait``.
    """
    es.cluster.health(index=index, wait_for_active_shards="1", timeout=wait)


def ensure_index_template_waiting(es, settings, stop, max_backoff: float = 10.0) -> None:
    """``ensure_index_template``, waiting with backoff while Elasticsearch is not up yet
    (or until the ``stop`` event is set).

    Raises:
        BPError: Elasticsearch refused the template or the index for good (an invalid
            index name, wrong credentials): waiting would not help; or stopped.
    """
    from bp_core.errors import BPError
    from bp_core.sinks.elasticsearch import error_reason, refused_for_good

    delay = 0.5
    while True:
        try:
            ensure_index_template(es, settings.es_index)
            return
        except Exception as exc:  # a transport error (ES not up yet) or ES's own answer
            if refused_for_good(getattr(exc, "status_code", None)):
                raise BPError(f"Elasticsearch at {settings.es_url} refused index "
                              f"{settings.es_index!r}: {error_reason(exc)}") from exc
            if stop.is_set():
                raise BPError(f"stopped while waiting for Elasticsearch at {settings.es_url}") from exc
            logging.getLogger("bp_core.consumer").warning(
                "Elasticsearch not ready at %s (%s); retrying in %.1fs", settings.es_url, type(exc).__name__, delay)
            stop.wait(delay)
            delay = min(delay * 2, max_backoff)
