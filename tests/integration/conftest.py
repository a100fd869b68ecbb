"""Fixtures for the real local stack (``make stack-up``): Kafka on 9092, ES on 9200.

Every test gets its own topic, consumer group, index and archive folder (uuid-suffixed,
from ``tests.stack_fixtures``), so tests never share state and can run in any order.
"""

from __future__ import annotations

import socket

import pytest

from bp_core.settings import Settings
from tests.stack_fixtures import (  # noqa: F401 (fixtures and helpers for this suite)
    create_topic, es, es_index, group, kafka_admin, settings, topic, unique,
)


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
def resource_prefix() -> str:
    return "bp-test"


@pytest.fixture(scope="session")
def mlflow_store_template(tmp_path_factory):
    """An empty MLflow SQLite store with its tables made, to copy to a test's
    ``settings.mlflow_tracking_uri``: making one runs MLflow's migrations (about 10 s on
    a loaded 2-core machine), a copy is instant."""
    import subprocess
    import sys

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    uri = f"sqlite:///{path}"
    subprocess.run([sys.executable, "-c", "import sys; from mlflow import MlflowClient; "
                    "c = MlflowClient(sys.argv[1], sys.argv[1]); c.search_experiments(); c.search_registered_models()",
                    uri], check=True, capture_output=True)
    return path

