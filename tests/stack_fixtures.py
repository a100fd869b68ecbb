"""Per-test resources on a running stack, shared by the integration and fault suites.

Each suite's conftest imports these fixtures and defines the two they depend on:
``stack`` (session ``Settings`` for its Kafka + Elasticsearch) and ``resource_prefix``
(how its topics, groups and indexes are named). Every test then gets its own topic
(3 partitions) + DLQ, consumer group, index and folders, uuid-suffixed, so tests never
share state and can run in any order.
"""

from __future__ import annotations

import uuid

import pytest

from bp_core.settings import Settings


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def create_topic(admin, name: str, partitions: int = 3) -> str:
    from kafka.admin import NewTopic

    admin.create_topics([NewTopic(name=name, num_partitions=partitions, replication_factor=1)])
    return name


@pytest.fixture(scope="session")
def kafka_admin(stack, resource_prefix):
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap, client_id=f"{resource_prefix}s")
    yield admin
    admin.close()


@pytest.fixture(scope="session")
def es(stack):
    from elasticsearch import Elasticsearch

    client = Elasticsearch(stack.es_url, request_timeout=30)
    yield client
    client.close()


@pytest.fixture
def topic(kafka_admin, resource_prefix) -> str:
    """A fresh 3-partition topic and its DLQ (``<topic>.dlq``); deleted afterwards."""
    name = unique(resource_prefix)
    create_topic(kafka_admin, name)
    create_topic(kafka_admin, f"{name}.dlq", partitions=1)
    yield name
    try:  # its DLQ, alerts and patients topics (the ``group`` fixture deletes its changelog)
        kafka_admin.delete_topics([t for t in kafka_admin.list_topics() if t.startswith(name) or name in t])
    except Exception:  # best effort: a leftover test topic is harmless
        pass


@pytest.fixture
def group(kafka_admin, resource_prefix) -> str:
    """A fresh consumer group; its patient-state changelog topic is deleted afterwards."""
    from bp_core.consumer.state import changelog_topic

    name = unique(f"{resource_prefix}-group")
    yield name
    changelog = changelog_topic(name)
    try:
        if changelog in kafka_admin.list_topics():
            kafka_admin.delete_topics([changelog])
    except Exception:  # best effort: a leftover test topic is harmless
        pass


@pytest.fixture
def es_index(es, resource_prefix) -> str:
    """A unique index (or alias) name; every index matching it is deleted afterwards."""
    name = unique(f"{resource_prefix}-anomalies")
    yield name
    try:
        es.options(ignore_status=404).indices.delete(index=f"{name}*", expand_wildcards="all")
        es.options(ignore_status=404).indices.delete_index_template(name=name)
    except Exception:  # ES may be the thing a failed (fault) test left stopped
        pass


@pytest.fixture
def settings(stack, topic, group, es_index, tmp_path) -> Settings:
    """Settings pointing at this test's own topics, group, index and folders."""
    return stack.with_(
        topic=topic,
        alerts_topic=f"{topic}.alerts",
        patients_topic=f"{topic}.patients",
        consumer_group=group,
        es_index=es_index,
        archive_dir=tmp_path / "archive",
        data_dir=tmp_path / "data",
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
