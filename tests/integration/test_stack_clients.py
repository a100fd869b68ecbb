"""Non-Python clients reach the local stack: Kafka's own CLI tools and curl; and
``stack.sh up`` leaves nothing half up when a server cannot start."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests.integration.helpers import REPO

STACK = str(REPO / "infra" / "stack.sh")


def test_kafka_console_tools_produce_and_consume(stack, topic):
    lines = [f"line-{i}" for i in range(5)]
    subprocess.run([STACK, "kafka", "console-producer", "--bootstrap-server", stack.kafka_bootstrap,
                    "--topic", topic], input="\n".join(lines) + "\n", text=True, check=True, timeout=120)
    out = subprocess.run([STACK, "kafka", "console-consumer", "--bootstrap-server", stack.kafka_bootstrap,
                          "--topic", topic, "--from-beginning", "--max-messages", "5", "--timeout-ms", "30000"],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    assert sorted(out.split()) == sorted(lines)
    listed = subprocess.run([STACK, "kafka", "topics", "--bootstrap-server", stack.kafka_bootstrap, "--list"],
                            capture_output=True, text=True, check=True, timeout=120).stdout
    assert topic in listed.split()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_sees_a_healthy_elasticsearch_9(stack):
    health = json.loads(subprocess.run(["curl", "-fsS", f"{stack.es_url}/_cluster/health"],
                                       capture_output=True, text=True, check=True).stdout)
    assert health["status"] in ("green", "yellow")
    nodes = json.loads(subprocess.run(["curl", "-fsS", f"{stack.es_url}/_nodes/_local?filter_path=nodes.*.version"],
                                      capture_output=True, text=True, check=True).stdout)
    assert all(node["version"].startswith("9.") for node in nodes["nodes"].values())


def test_stack_status_reports_both_up(stack):
    out = subprocess.run([STACK, "status"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "kafka          up" in out.stdout and "elasticsearch  up" in out.stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _processes_under(folder: Path) -> list[str]:
    """Command lines of running processes that mention ``folder``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(folder) in cmdline:
            found.append(cmdline[:200])
    return found


def test_a_failed_start_stops_the_server_it_did_start(stack, tmp_path):
    """Elasticsearch cannot start (its port is taken): `up` exits 1 and stops the Kafka
    it had started, instead of leaving it running for `make test` to forget."""
    stack_dir = tmp_path / "stack"
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        es_port = squatter.getsockname()[1]
        env = {**os.environ, "BP_STACK_DIR": str(stack_dir), "BP_KAFKA_PORT": str(_free_port()),
               "BP_KAFKA_CONTROLLER_PORT": str(_free_port()), "BP_ES_PORT": str(es_port),
               "BP_ES_TRANSPORT_PORT": str(_free_port()), "BP_KAFKA_HEAP": "-Xms128m -Xmx256m"}
        result = subprocess.run([STACK, "up"], env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"port {es_port} is taken" in result.stderr
    assert "Kafka stopped" in result.stdout, result.stdout
    assert _processes_under(stack_dir) == []
