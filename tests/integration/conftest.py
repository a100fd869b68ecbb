"""Fixtures for the real local stack (``make stack-up``): Kafka on 9092, ES on 9200.

Every test gets its own topic, consumer group, index and archive folder (uuid-suffixed),
so tests never share state and can run in any order.
"""

from __future__ import annotations

import socket
import uuid

import pytest

from bp_core.settings import Settings


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _port_open(hostport: str) -> bool:
    host, port = hostport.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def stack() -> Settings:
    """Settings for the running local stack; fails (not skips) when it is down."""
    settings = Settings.from_env()  # BP_KAFKA_BOOTSTRAP / BP_ES_URL may point elsewhere
    es_hostport = settings.es_url.split("://", 1)[1].rstrip("/")
    missing = [name for name, hp in (("Kafka", settings.kafka_bootstrap), ("Elasticsearch", es_hostport))
               if not _port_open(hp)]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not reachable: run `make stack-up` (or `make test`)", pytrace=False)
    return settings


@pytest.fixture(scope="session")
def kafka_admin(stack):
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap, client_id="bp-tests")
    yield admin
    admin.close()


@pytest.fixture(scope="session")
def es(stack):
    from elasticsearch import Elasticsearch

    client = Elasticsearch(stack.es_url, request_timeout=30)
    yield client
    client.close()


def create_topic(admin, name: str, partitions: int = 3) -> str:
    from kafka.admin import NewTopic

    admin.create_topics([NewTopic(name=name, num_partitions=partitions, replication_factor=1)])
    return name


@pytest.fixture
def topic(kafka_admin) -> str:
    """A fresh 3-partition topic and its DLQ (``<topic>.dlq``); deleted afterwards."""
    name = unique("bp-test")
    create_topic(kafka_admin, name)
    create_topic(kafka_admin, f"{name}.dlq", partitions=1)
    yield name
    try:
        kafka_admin.delete_topics([name, f"{name}.dlq"])
    except Exception:  # best effort: a leftover test topic is harmless
        pass


@pytest.fixture
def group() -> str:
    return unique("bp-test-group")


@pytest.fixture
def es_index(es) -> str:
    """A unique index (or alias) name; every index matching it is deleted afterwards."""
    name = unique("bp-test-anomalies")
    yield name
    es.options(ignore_status=404).indices.delete(index=f"{name}*", expand_wildcards="all")
    es.options(ignore_status=404).indices.delete_index_template(name=name)


@pytest.fixture
def settings(stack, topic, group, es_index, tmp_path) -> Settings:
    """Settings pointing at this test's own topic, group, index and folders."""
    return stack.with_(
        topic=topic,
        consumer_group=group,
        es_index=es_index,
        archive_dir=tmp_path / "archive",
        data_dir=tmp_path / "data",
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
