"""The fault suite's own stack: a second Kafka + Elasticsearch on 19092 / 19200.

Fault tests kill, stop and restart servers, so they never touch the shared stack on
9092 / 9200 that other integration tests use. The session fixture starts the second
stack with ``infra/stack.sh up`` (state in ``<repo>/.stack-faults``, small heaps) and
stops it at the end — unless it was already up, in which case it leaves it running
(as ``make test`` does with the main stack: stop only what you started).

Every test gets its own topic (3 partitions) + DLQ, group, index and archive folder.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from bp_core.settings import Settings
from tests.integration.conftest import create_topic, unique
from tests.integration.helpers import REPO

FAULTS_ENV = {
    "BP_STACK_DIR": str(REPO / ".stack-faults"),
    "BP_KAFKA_PORT": "19092",
    "BP_KAFKA_CONTROLLER_PORT": "19093",
    "BP_ES_PORT": "19200",
    "BP_ES_TRANSPORT_PORT": "19300",
    "BP_ES_HEAP": "-Xms384m -Xmx384m",
    "BP_KAFKA_HEAP": "-Xms128m -Xmx384m",
}
KAFKA = "127.0.0.1:19092"
ES_URL = "http://127.0.0.1:19200"


def stack(*args: str, check: bool = True, timeout: float = 240) -> subprocess.CompletedProcess:
    """``infra/stack.sh ARGS`` against the fault stack (never the shared one)."""
    result = subprocess.run([str(REPO / "infra" / "stack.sh"), *args], env={**os.environ, **FAULTS_ENV},
                            cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"infra/stack.sh {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def fault_stack() -> Settings:
    """Settings for the fault stack, started for this session (stopped after it)."""
    started = stack("is-up", check=False).returncode != 0
    if started:
        stack("up")
    yield Settings.from_env().with_(kafka_bootstrap=KAFKA, es_url=ES_URL)
    # A test that failed half-way may have left a server stopped: `down` handles that.
    if started:
        stack("down", check=False)
    else:
        stack("up", check=False)  # leave it as found: running


@pytest.fixture(scope="session")
def kafka_admin(fault_stack):
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=fault_stack.kafka_bootstrap, client_id="bp-fault-tests")
    yield admin
    admin.close()


@pytest.fixture(scope="session")
def es(fault_stack):
    from elasticsearch import Elasticsearch

    client = Elasticsearch(fault_stack.es_url, request_timeout=30)
    yield client
    client.close()


@pytest.fixture
def topic(kafka_admin) -> str:
    name = unique("bp-fault")
    create_topic(kafka_admin, name)
    create_topic(kafka_admin, f"{name}.dlq", partitions=1)
    yield name
    try:
        kafka_admin.delete_topics([name, f"{name}.dlq"])
    except Exception:  # best effort: a leftover test topic is harmless (and the stack goes down)
        pass


@pytest.fixture
def es_index(es) -> str:
    name = unique("bp-fault-anomalies")
    yield name
    try:
        es.options(ignore_status=404).indices.delete(index=f"{name}*", expand_wildcards="all")
        es.options(ignore_status=404).indices.delete_index_template(name=name)
    except Exception:  # ES may be the thing a failed test left stopped
        pass


@pytest.fixture
def settings(fault_stack, topic, es_index, tmp_path) -> Settings:
    return fault_stack.with_(
        topic=topic,
        consumer_group=unique("bp-fault-group"),
        es_index=es_index,
        archive_dir=tmp_path / "archive",
        data_dir=tmp_path / "data",
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
