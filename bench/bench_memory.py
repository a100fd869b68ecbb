"""Consumer memory over a long stream: RSS after 100k and after 1M messages (flat = no leak).

    .venv/bin/python bench/bench_memory.py --messages 1000000

Fills a fresh topic with ``bp produce``, then runs ``bp consume`` (rules only) with
Prometheus metrics on, and samples the process's resident set size (``/proc/PID/status``)
each time the consumed counter crosses a checkpoint.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from common import REPO, drop_bench_resources, machine


def rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def consumed(port: int) -> float:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith("bp_messages_consumed_total "):
            return float(line.split()[1])
    return 0.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "bench-memory.md")
    args = parser.parse_args()
    checkpoints = sorted({c for c in (10_000, 100_000, 250_000, 500_000, 750_000, args.messages) if c <= args.messages})

    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    from bp_core.simulation.stream import produce
    from bp_core.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="bp-memory-"))
    run_id = uuid.uuid4().hex[:8]
    settings = Settings.from_env().with_(
        topic=f"bench-memory-{run_id}", consumer_group=f"bench-memory-{run_id}",
        es_index=f"bench-memory-{run_id}", archive_dir=tmp / "archive", data_dir=tmp / "data",
        mlflow_tracking_uri=f"sqlite:///{tmp}/none.db")
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    admin.create_topics([NewTopic(settings.topic, 3, 1), NewTopic(settings.dlq_topic, 1, 1)])
    port = free_port()
    env = {**os.environ, "BP_TOPIC": settings.topic, "BP_CONSUMER_GROUP": settings.consumer_group,
           "BP_ES_INDEX": settings.es_index, "BP_ARCHIVE_DIR": str(settings.archive_dir),
           "BP_DATA_DIR": str(settings.data_dir), "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri}
    samples: list[tuple[int, float]] = []
    consumer = None
    try:
        started = time.monotonic()
        summary = produce(settings, count=args.messages, patients=5000, seed=5)
        fill_seconds = time.monotonic() - started
        log = open(tmp / "consumer.log", "wb")
        consumer = subprocess.Popen([str(REPO / ".venv" / "bin" / "bp"), "consume", "--metrics-port", str(port),
                                     "--exit-when-idle", "10"], env=env, stdout=log, stderr=log)
        pending = list(checkpoints)
        consume_started = time.monotonic()
        while pending and consumer.poll() is None:
            done = consumed(port)
            while pending and done >= pending[0]:
                samples.append((pending.pop(0), rss_mib(consumer.pid)))
            time.sleep(0.05)
        consume_seconds = time.monotonic() - consume_started
        if pending:
            raise SystemExit(f"consumer stopped early; see {tmp / 'consumer.log'}")
    finally:
        if consumer and consumer.poll() is None:
            consumer.terminate()
            consumer.wait(timeout=120)
        admin.close()
        drop_bench_resources(settings)

    by_count = dict(samples)
    growth = by_count[args.messages] - by_count[min(100_000, args.messages)]
    rows = [f"| {count:,} | {mib:.0f} MiB |" for count, mib in samples]
    section = "\n".join([
        "## Consumer memory over a long stream",
        "",
        f"Command: `.venv/bin/python bench/bench_memory.py --messages {args.messages}` — {machine()}.",
        "",
        f"{summary.sent:,} messages produced in {fill_seconds:.0f} s, then consumed by one `bp consume` "
        f"(batches of 5000, rules only) in about {consume_seconds:.0f} s; resident set size when the consumed "
        "counter passed each mark:",
        "",
        "| messages consumed | RSS |",
        "|---:|---:|",
        *rows,
        "",
        f"From 100k to {args.messages:,} messages the RSS changed by {growth:+.0f} MiB.",
        "",
    ])
    print(section)
    args.out.write_text(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
