"""`make demo` end to end: infra/demo.sh against the real stack, with real Airflow runs.

Everything the demo touches is redirected (unique topic, index and group; data, archive,
MLflow store, Airflow home and consumer pid/log in tmp; a free metrics port), so the
user's defaults are never touched. The demo runs twice: the first run starts the
consumer and promotes the first model against the rules alone; the second reuses that
consumer, trains a challenger, has the consumer score it in shadow on the stream, and
lets the gate judge it on that live evidence (BP_GATE_MIN_SHADOW_READINGS = the stream's
size: every streamed reading must have been shadow-scored and published). Each run's
summary must equal what Elasticsearch, the archive, the DLQ, the alerts topic and the
consumer's metrics hold. The consumer the demo left running is stopped at the end.

The --drift option is not run here: it adds about four minutes on this machine, more
than the two runs of the baseline part (docs/demo.md); its summary is unit-tested in
test_demo_summary.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bp_core.kibana import DEFAULT_TIME_FROM, DEFAULT_TIME_TO
from bp_core.settings import Settings
from bp_core.sinks.archive import read_archive
from tests.integration.conftest import unique
from tests.integration.helpers import read_all

pytestmark = pytest.mark.airflow

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "infra" / "demo.sh"
DEMO_TIMEOUT = 600
COUNT = 1000
STREAM_PATIENTS = 50  # 20 readings each per run: baselines (>= 5 previous) and sustained hypertension (>= 12)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped) is not alive
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.fixture
def demo_env(stack, kafka_admin, es, tmp_path):
    topic, index = unique("bp-demo-test"), unique("bp-demo-test-anomalies")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "BP_", "MLFLOW_"))}
    env.update({
        "BP_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
        "BP_ES_URL": stack.es_url,
        "BP_TOPIC": topic,
        "BP_ALERTS_TOPIC": f"{topic}.alerts",
        "BP_PATIENTS_TOPIC": f"{topic}.patients",
        "BP_ES_INDEX": index,
        "BP_CONSUMER_GROUP": unique("bp-demo-test-group"),
        "BP_DATA_DIR": str(tmp_path / "data"),
        "BP_ARCHIVE_DIR": str(tmp_path / "archive"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "BP_DEMO_HOME": str(tmp_path / "demo-home"),
        "BP_DEMO_METRICS_PORT": str(free_port()),
        "BP_DEMO_COUNT": str(COUNT),
        "BP_DEMO_STREAM_PATIENTS": str(STREAM_PATIENTS),
        "BP_GATE_MIN_SHADOW_READINGS": str(COUNT),
        "BP_DEMO_PATIENTS": "100",
        "BP_DEMO_READINGS": "8000",
        "BP_DEMO_HOLDOUT": "5000",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    })
    yield env
    pid_file = tmp_path / "demo-home" / "demo-consumer.pid"
    if pid_file.exists():  # the test failed before stopping it
        try:
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    try:
        kafka_admin.delete_topics([topic, f"{topic}.dlq", f"{topic}.alerts", f"{topic}.patients",
                                   f"{env['BP_CONSUMER_GROUP']}-patient-context-changelog"])
    except Exception:  # best effort
        pass
    es.options(ignore_status=404).indices.delete(index=f"{index}*", expand_wildcards="all")
    es.options(ignore_status=404).indices.delete_index_template(name=index)


def scrape(port: int) -> dict[str, float]:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
            if line and not line.startswith("#") and "{" not in line}


def run_demo(env: dict) -> tuple[str, dict, float]:
    started = time.monotonic()
    proc = subprocess.run([str(DEMO)], env=env, cwd=REPO, capture_output=True, text=True, timeout=DEMO_TIMEOUT)
    seconds = time.monotonic() - started
    print(f"\n--- infra/demo.sh ({seconds:.1f} s)\n{proc.stdout}{proc.stderr}")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    summary = json.loads((Path(env["BP_DEMO_HOME"]) / "airflow" / "logs-demo" / "summary.json").read_text())
    return proc.stdout, summary, seconds


def assert_summary_matches_the_sinks(env: dict, summary: dict, es) -> None:
    settings = Settings.from_env(env)
    topic = settings.topic
    es.indices.refresh(index=settings.es_index)
    in_es = es.count(index=settings.es_index, query={"term": {"source.topic": topic}})["count"]
    archived = read_archive(settings.archive_dir, topic)
    dlq = read_all(settings.kafka_bootstrap, settings.dlq_topic)
    on_topic = read_all(settings.kafka_bootstrap, topic)
    assert summary["anomalies"] == in_es
    assert summary["normals"] == len(archived)
    assert summary["rejects"] == len(dlq)
    assert summary["topic_messages"] == len(on_topic)
    assert summary["anomalies"] + summary["normals"] + summary["rejects"] == len(on_topic)
    assert summary["consistent"] is True
    archived_by_category: dict[str, int] = {}
    for record in archived:
        archived_by_category[record["category"]] = archived_by_category.get(record["category"], 0) + 1
    for row in summary["categories"]:
        assert row["normals"] == archived_by_category.get(row["category"], 0), row
        expected = es.count(index=settings.es_index, query={"bool": {"filter": [
            {"term": {"source.topic": topic}}, {"term": {"category": row["category"]}}]}})["count"]
        assert row["anomalies"] == expected, row
    layers = summary["layers"]
    assert layers["rules_only"] + layers["model_only"] + layers["both"] == in_es
    first = dict((k, v.decode()) for k, v in dlq[0].headers)
    assert summary["first_reject_reason"] == first["bp.error.reason"]
    assert_second_wave_parts(settings, summary, es)


def assert_second_wave_parts(settings: Settings, summary: dict, es) -> None:
    """Alerts, patient context, Kibana's time range and the serving model, against their sources."""
    index, topic = settings.es_index, settings.topic

    def count(*filters) -> int:
        return es.count(index=index, query={"bool": {"filter": [{"term": {"source.topic": topic}}, *filters]}})["count"]

    # Every anomaly is in the dashboard's default time range (the producer ends simulated times at now).
    span = summary["time_range"]
    assert (span["from"], span["to"]) == (DEFAULT_TIME_FROM, DEFAULT_TIME_TO)
    in_range = count({"range": {"@timestamp": {"gte": DEFAULT_TIME_FROM, "lte": DEFAULT_TIME_TO}}})
    assert span["in_range"] == in_range == summary["anomalies"]

    # The alerts topic: one RiskAssessment per anomaly, the Devices of its assessors, a Flag per change.
    resources = [json.loads(r.value) for r in read_all(settings.kafka_bootstrap, settings.alerts_topic)]
    alerts = summary["alerts"]
    assert alerts["topic"] == settings.alerts_topic and alerts["messages"] == len(resources)
    by_type: dict[str, int] = {}
    for resource in resources:
        by_type[resource["resourceType"]] = by_type.get(resource["resourceType"], 0) + 1
    assert {kind: sum(statuses.values()) for kind, statuses in alerts["by_type"].items()} == by_type
    final = {r["id"] for r in resources if r["resourceType"] == "RiskAssessment" and r["status"] == "final"}
    assert alerts["risk_assessments"] == len(final) == summary["anomalies"]
    assert by_type["Device"] >= 1
    example = alerts["example"]
    assert example["resourceType"] == "RiskAssessment" and example["id"] in final
    assert example["subject"]["reference"].startswith("Patient/")
    assert example["basis"][0]["reference"].startswith("Observation/")
    patient = example["subject"]["reference"].removeprefix("Patient/")
    names = [part for r in read_all(settings.kafka_bootstrap, settings.patients_topic) if r.key.decode() == patient
             for name in json.loads(r.value).get("name", []) for part in [name.get("family"), *name.get("given", [])]
             if part]
    assert names and not any(part in json.dumps(example) for part in names)  # the Patient's name stays on its topic

    # The patient context: rises and drops as Elasticsearch counts them; sustained
    # hypertension as the consumer's state holds it.
    context = summary["context"]
    assert context["rises"] == count({"term": {"anomaly_types": "rise_from_baseline"}})
    assert context["drops"] == count({"term": {"anomaly_types": "drop_from_baseline"}})
    assert context["with_baseline"] == count({"range": {"baseline_readings": {"gte": 1}}}) > 0
    assert context["rises"] + context["drops"] > 0
    metrics = scrape(summary["consumer"]["metrics_port"])
    assert context["sustained_patients"] == metrics["bp_patients_sustained_hypertension"] > 0
    assert summary["serving"] == summary["champion"]["version"]


def test_make_demo_end_to_end(demo_env, es):
    env = demo_env
    home = Path(env["BP_DEMO_HOME"])

    # 1. First run: consumer started, first model promoted (there is no champion yet).
    stdout, summary, first_seconds = run_demo(env)
    pid = int((home / "demo-consumer.pid").read_text())
    assert alive(pid)
    assert (home / "airflow" / "airflow.db").is_file()
    for dag in ("bp_generate_data", "bp_train_model", "bp_promote_model"):
        assert (home / "airflow" / "logs-demo" / f"{dag}.log").is_file()
        assert dag in stdout
    assert summary["consumer"]["reused"] is False
    assert summary["champion"] and summary["champion"]["version"] == "1"
    assert summary["champion"]["metrics"]["pr_auc"] > 0
    assert summary["challenger"]["decision"] == "promoted"  # against the rules alone: nothing to shadow
    assert summary["challenger"]["evidence"] is None
    assert summary["rejects"] == summary["demo"]["malformed"] >= 3
    assert summary["topic_messages"] == COUNT + summary["demo"]["malformed"]
    assert summary["throughput"]["messages"] == summary["topic_messages"]
    assert_summary_matches_the_sinks(env, summary, es)
    assert "Open the UIs" in stdout and "make stack-down" in stdout
    for part in ("Kibana's default time range", "Patient context", "Alerts on", "e.g. RiskAssessment",
                 "The consumer serves now: v1"):
        assert part in stdout, part

    # 2. Second run: the same consumer is reused; the chain runs again with a champion in
    #    place (the gate decides); totals cover both runs' messages on the topic.
    stdout, summary, second_seconds = run_demo(env)
    assert int((home / "demo-consumer.pid").read_text()) == pid
    assert "reusing" in stdout
    assert summary["consumer"]["reused"] is True
    assert summary["challenger"]["version"] == "2"
    assert summary["challenger"]["decision"] in ("promoted", "rejected")  # not deferred: the evidence was there
    assert summary["challenger"]["min_shadow_readings"] == COUNT
    assert summary["challenger"]["evidence"]["readings"] == COUNT  # every reading of the stream, scored by v2
    assert summary["challenger"]["evidence"]["champion_version"] == "1"
    assert summary["champion"]["version"] in ("1", "2")
    assert "shadows v2" in stdout and "shadow evidence of v2 in MLflow" in stdout
    assert summary["topic_messages"] == 2 * (COUNT + summary["demo"]["malformed"])
    assert_summary_matches_the_sinks(env, summary, es)
    print(f"demo wall time: first run {first_seconds:.1f} s, second run {second_seconds:.1f} s")

    # 3. Stop the consumer the demo left running: SIGTERM, clean exit.
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(pid), "the demo consumer did not stop within 60 s of SIGTERM"
    log = (home / "demo-consumer.log").read_text()
    assert "stopped: messages=" in "".join(log.splitlines()[-2:]), log[-2000:]  # then where the time went
    (home / "demo-consumer.pid").unlink()
