"""Non-Python clients reach the local stack: Kafka's own CLI tools and curl."""

from __future__ import annotations

import json
import shutil
import subprocess

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
