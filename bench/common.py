"""What the benchmarks share: the machine's description, a bench's own resources on the
local stack (topic, DLQ, index, folders), and ``bp consume`` run as a user runs it."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import tempfile
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
    """Settings for a bench of its own: a fresh topic (``partitions``) and DLQ, index
    prefix, archive and data folders, and an MLflow store in a temporary folder."""
    from kafka.admin import NewTopic

    from bp_core.clients import kafka_admin
    from bp_core.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix=f"bp-{name}-"))
    run_id = uuid.uuid4().hex[:8]
    settings = Settings.from_env().with_(
        topic=f"bench-{name}-{run_id}", consumer_group=f"bench-{name}-{run_id}", es_index=f"bench-{name}-{run_id}",
        archive_dir=tmp / "archive", data_dir=tmp / "data", mlflow_tracking_uri=f"sqlite:///{tmp}/mlflow.db")
    admin = kafka_admin(settings, "bp-bench")
    admin.create_topics([NewTopic(settings.topic, partitions, 1), NewTopic(settings.dlq_topic, 1, 1)])
    admin.close()
    return settings


def drop_bench_resources(settings) -> None:
    """Delete a bench's topics, indices and index templates."""
    from bp_core.clients import elasticsearch, kafka_admin

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
            "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri, **{k: str(v) for k, v in extra.items()}}


@dataclass(frozen=True)
class ConsumeRun:
    """What ``bp consume`` said about one run in its summary lines."""

    messages: int
    rate: float            # messages/s, from its first batch to its last durable one
    times: str             # where the time went ('' for a version that does not say)


_SUMMARY = re.compile(r"stopped: messages=(\d+) .*?rate=(\d+)/s")


def consume(settings, run: str, *args: str, checkout: Path | None = None, **env) -> ConsumeRun:
    """Run ``bp consume --exit-when-idle 2`` to the end of the topic, with a group, index
    and archive of its own (so every run does the whole work). ``checkout``: run the
    ``bp_core`` of another working tree (e.g. the code before a change) instead."""
    settings = settings.with_(consumer_group=f"{settings.consumer_group}-{run}", es_index=f"{settings.es_index}-{run}",
                              archive_dir=settings.archive_dir / run)
    environment = bp_env(settings, **env)
    if checkout is not None:
        environment["PYTHONPATH"] = str(checkout)
    done = subprocess.run([BP, "consume", "--exit-when-idle", "2", "--model-refresh", "3600", *args],
                          env=environment, capture_output=True, text=True, timeout=1800)
    summary = _SUMMARY.search(done.stderr)
    if done.returncode != 0 or summary is None:
        raise SystemExit(f"bp consume ({run}) failed with {done.returncode}:\n{done.stderr[-3000:]}")
    times = re.search(r"time: (.*)", done.stderr)
    return ConsumeRun(int(summary.group(1)), float(summary.group(2)), times.group(1) if times else "")


def write_section(path: Path, lines: list[str]) -> None:
    text = "\n".join(lines) + "\n"
    print(text)
    path.write_text(text)
