"""The fault suite's own stack: a second Kafka + Elasticsearch on 19092 / 19200.

Fault tests kill, stop and restart servers, so they never touch the shared stack on
9092 / 9200 that other integration tests use. The session fixture starts the second
stack with ``infra/stack.sh up`` (state in ``<repo>/.stack-faults``, small heaps) and
stops it at the end — unless it was already up, in which case it leaves it running
(as ``make test`` does with the main stack: stop only what you started).

Every test gets its own topic (3 partitions) + DLQ, group, index and archive folder
(``tests.stack_fixtures``, on this stack).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from bp_core.settings import Settings
from tests.integration.helpers import REPO
from tests.stack_fixtures import es, es_index, group, kafka_admin, settings, topic  # noqa: F401 (this suite's fixtures)

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


def stack_sh(*args: str, check: bool = True, timeout: float = 240) -> subprocess.CompletedProcess:
    """``infra/stack.sh ARGS`` against the fault stack (never the shared one)."""
    result = subprocess.run([str(REPO / "infra" / "stack.sh"), *args], env={**os.environ, **FAULTS_ENV},
                            cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"infra/stack.sh {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


class KafkaStall:
    """The fault stack's broker stopped with SIGSTOP within, continued with SIGCONT after:
    its connections stay open and it answers nothing, as during a long GC pause or a VM
    freeze. A send in flight then stays in flight, whatever the machine's speed.

    Keep it short (the broker is its own KRaft controller, and a consumer group's member
    expires after its session timeout). ``resume()`` ends it early, from any thread.
    """

    def __init__(self) -> None:
        self.pid = int((Path(FAULTS_ENV["BP_STACK_DIR"]) / "kafka" / "kafka.pid").read_text())
        self._lock = threading.Lock()
        self._stopped = False

    def __enter__(self) -> "KafkaStall":
        with self._lock:
            os.kill(self.pid, signal.SIGSTOP)
            self._stopped = True
        return self

    def resume(self) -> None:
        with self._lock:
            if self._stopped:
                os.kill(self.pid, signal.SIGCONT)
                self._stopped = False

    def __exit__(self, *exc) -> None:
        self.resume()


@pytest.fixture(scope="session")
def stack() -> Settings:
    """Settings for the fault stack, started for this session (stopped after it)."""
    started = stack_sh("is-up", check=False).returncode != 0
    if started:
        stack_sh("up")
    yield Settings.from_env().with_(kafka_bootstrap=KAFKA, es_url=ES_URL)
    # A test that failed half-way may have left a server stopped: `down` handles that.
    if started:
        stack_sh("down", check=False)
    else:
        stack_sh("up", check=False)  # leave it as found: running


@pytest.fixture(scope="session")
def resource_prefix() -> str:
    return "bp-fault"
