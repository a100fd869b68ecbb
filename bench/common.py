"""What the benchmarks share: the machine's description, a bench's own resources on the
local stack (topics, index, folders, MLflow store), ``bp consume`` run as a user runs it,
a process's resident set size, and percentiles."""

from __future__ import annotations

import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BP = str(Path(sys.executable).parent / "bp")


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               "unknown CPU")
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def bench_settings(name: str, partitions: int = 3):
    """Settings for a bench of its own: a fresh topic (``partitions``) and DLQ, alerts and
    patients topics, index prefix, archive and data folders, and an MLflow store in a
    temporary folder. Every topic name starts with the source topic's (the consumer
    group's changelog too), so ``drop_bench_resources`` finds them all."""
    from kafka.admin import NewTopic

    from bp_core.clients import kafka_admin
    from bp_core.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix=f"bp-{name}-"))
    run_id = uuid.uuid4().hex[:8]
    settings = Settings.from_env().with_(
        topic=f"bench-{name}-{run_id}", consumer_group=f"bench-{name}-{run_id}", es_index=f"bench-{name}-{run_id}",
        alerts_topic=f"bench-{name}-{run_id}.alerts", patients_topic=f"bench-{name}-{run_id}.patients",
        archive_dir=tmp / "archive", data_dir=tmp / "data", mlflow_tracking_uri=f"sqlite:///{tmp}/mlflow.db")
    admin = kafka_admin(settings, "bp-bench")
    admin.create_topics([NewTopic(settings.topic, partitions, 1), NewTopic(settings.dlq_topic, 1, 1)])
    admin.close()
    return settings


def drop_bench_resources(settings) -> None:
    """Delete a bench's topics, indices, index templates and archive folder (logs and the
    MLflow store stay in its temporary folder)."""
    from bp_core.clients import elasticsearch, kafka_admin

    shutil.rmtree(settings.archive_dir, ignore_errors=True)

    admin = kafka_admin(settings, "bp-bench")
    topics = [t for t in admin.list_topics() if t.startswith(settings.topic)]
    admin.delete_topics(topics)
    admin.close()
    es = elasticsearch(settings)
    es.options(ignore_status=404).indices.delete(index=f"{settings.es_index}*")
    es.options(ignore_status=404).indices.delete_index_template(name=f"{settings.es_index}*")
    es.close()


def bp_env(settings, **extra) -> dict:
    """The environment of a ``bp`` command pointed at a bench's resources."""
    return {**os.environ, "BP_KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "BP_TOPIC": settings.topic,
            "BP_ES_URL": settings.es_url, "BP_ES_INDEX": settings.es_index, "BP_CONSUMER_GROUP": settings.consumer_group,
            "BP_ARCHIVE_DIR": str(settings.archive_dir), "BP_DATA_DIR": str(settings.data_dir),
            "BP_ALERTS_TOPIC": settings.alerts_topic, "BP_PATIENTS_TOPIC": settings.patients_topic,
            "BP_MODEL_NAME": settings.model_name, "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
            **{k: str(v) for k, v in extra.items()}}


@dataclass(frozen=True)
class ConsumeRun:
    """What ``bp consume`` said about one run in its summary lines."""

    messages: int
    rate: float            # messages/s, from its first batch to its last durable one
    times: str             # where the time went ('' for a version that does not say)
    anomalies: int = 0     # readings routed to Elasticsearch (and alerted)


_SUMMARY = re.compile(r"stopped: messages=(\d+) .*?rate=(\d+)/s")


def prepare_index(settings, refresh_interval: str) -> None:
    """Create ``settings.es_index`` as the consumer would (the product's template), then
    set its ``refresh_interval`` through Elasticsearch's index settings API, as an
    operator would on a live index. The consumer, started after, finds the index there."""
    from bp_core.clients import elasticsearch
    from bp_core.sinks.es_template import ensure_index_template

    es = elasticsearch(settings)
    ensure_index_template(es, settings.es_index)
    es.indices.put_settings(index=settings.es_index, settings={"index": {"refresh_interval": refresh_interval}})
    es.close()


def consume(settings, run: str, *args: str, checkout: Path | None = None, refresh_interval: str | None = None,
            **env) -> ConsumeRun:
    """Run ``bp consume --exit-when-idle 2`` to the end of the topic, with a group, index
    and archive of its own (so every run does the whole work). ``checkout``: run the
    ``bp_core`` of another working tree (e.g. the code before a change) instead, with the
    packages ``checkout.py`` put in its ``.deps``;
    ``refresh_interval``: the run's index refreshes at that interval (``prepare_index``);
    ``env``: environment variables of the run (``BP_PATIENT_CONTEXT="off"``...)."""
    settings = settings.with_(consumer_group=f"{settings.consumer_group}-{run}", es_index=f"{settings.es_index}-{run}",
                              archive_dir=settings.archive_dir / run)
    if refresh_interval is not None:
        prepare_index(settings, refresh_interval)
    environment = bp_env(settings, **env)
    if checkout is not None:
        environment["PYTHONPATH"] = os.pathsep.join(str(path) for path in (checkout, checkout / ".deps") if path.is_dir())
    done = subprocess.run([BP, "consume", "--exit-when-idle", "2", "--model-refresh", "3600", *args],
                          env=environment, capture_output=True, text=True, timeout=1800)
    summary = _SUMMARY.search(done.stderr)
    if done.returncode != 0 or summary is None:
        raise SystemExit(f"bp consume ({run}) failed with {done.returncode}:\n{done.stderr[-3000:]}")
    times = re.search(r"time: (.*)", done.stderr)
    anomalies = re.search(r"stopped: .*?anomalies=(\d+)", done.stderr)
    return ConsumeRun(int(summary.group(1)), float(summary.group(2)), times.group(1) if times else "",
                      int(anomalies.group(1)) if anomalies else 0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RunningConsumer:
    """A ``bp consume`` running in the background on a bench's resources, its output in a
    log file of its own, its Prometheus metrics on a free port."""

    def __init__(self, settings, *args: str, **env) -> None:
        self.port = free_port()
        self.log_path = Path(tempfile.mkstemp(prefix="bp-consume-", suffix=".log", dir=settings.data_dir.parent)[1])
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen([BP, "consume", "--metrics-port", str(self.port), *args],
                                            env=bp_env(settings, **env), stdout=log, stderr=log)

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_for(self, text: str, timeout: float = 120.0) -> None:
        """Until its log holds ``text``; exits the bench if it stopped or took too long."""
        deadline = time.monotonic() + timeout
        while text.encode() not in self.log_path.read_bytes():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SystemExit(f"bp consume never logged {text!r}; see {self.log_path}")
            time.sleep(0.1)

    def consumed(self) -> float:
        """Messages made durable so far (``bp_messages_consumed_total``); 0 before it answers."""
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2).read().decode()
        except OSError:
            return 0.0
        found = re.search(r"^bp_messages_consumed_total (\S+)$", text, re.M)
        return float(found.group(1)) if found else 0.0

    def wait_consumed(self, count: int, timeout: float = 600.0) -> None:
        """Until ``count`` messages are durable; exits the bench if it stopped or took too long."""
        deadline = time.monotonic() + timeout
        while self.consumed() < count:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SystemExit(f"bp consume stopped or stalled before {count:,} messages; see {self.log_path}")
            time.sleep(0.05)

    def wait(self, timeout: float = 600.0) -> int:
        """Its exit code, once it stopped by itself (``--exit-when-idle``)."""
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        """Stop it as a user does (SIGTERM: finish the batch, commit, exit)."""
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=120)


def rss_mib(pid: int | str = "self") -> float:
    """A process's resident set size (``VmRSS``), MiB."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def percentile(values, q: float) -> float:
    """The ``q``-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def write_section(path: Path, lines: list[str]) -> None:
    text = "\n".join(lines) + "\n"
    print(text)
    path.write_text(text)
