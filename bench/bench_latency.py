"""Latency from produce to indexed, at a steady rate, against the real local stack.

    .venv/bin/python bench/bench_latency.py --rate 1000 --seconds 30

A ``bp consume`` process (model-less: rules only, so only the pipeline is measured)
runs on a fresh topic while ``bp_core.simulation.stream.produce`` streams at ``--rate`` readings/s.
For every anomaly document in Elasticsearch, latency = its ``ingested_at`` (set by the
consumer when it built the document, just before the bulk request) minus the Kafka
record's timestamp (CreateTime, set by the producer when it sent it), joined on
``source.partition``/``source.offset``. Reports p50, p99 and max, and how long a
document then takes to become searchable (the index refreshes every second).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

from common import REPO, machine


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "bench-latency.md")
    args = parser.parse_args()

    from elasticsearch import Elasticsearch
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
    from kafka.admin import NewTopic

    from bp_core.simulation.stream import produce
    from bp_core.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="bp-latency-"))
    run_id = uuid.uuid4().hex[:8]
    settings = Settings.from_env().with_(
        topic=f"bench-latency-{run_id}", consumer_group=f"bench-latency-{run_id}",
        es_index=f"bench-latency-{run_id}", archive_dir=tmp / "archive", data_dir=tmp / "data",
        mlflow_tracking_uri=f"sqlite:///{tmp}/none.db")
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    admin.create_topics([NewTopic(settings.topic, 3, 1), NewTopic(settings.dlq_topic, 1, 1)])
    env = {**os.environ, "BP_TOPIC": settings.topic, "BP_CONSUMER_GROUP": settings.consumer_group,
           "BP_ES_INDEX": settings.es_index, "BP_ARCHIVE_DIR": str(settings.archive_dir),
           "BP_DATA_DIR": str(settings.data_dir), "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri}
    log = open(tmp / "consumer.log", "wb")
    consumer = subprocess.Popen([str(REPO / ".venv" / "bin" / "bp"), "consume", "--exit-when-idle", "5"],
                                env=env, stdout=log, stderr=log)
    es = Elasticsearch(settings.es_url)
    try:
        deadline = time.monotonic() + 60
        while b"assigned partitions" not in (tmp / "consumer.log").read_bytes():
            if time.monotonic() > deadline or consumer.poll() is not None:
                raise SystemExit(f"consumer did not start; see {tmp / 'consumer.log'}")
            time.sleep(0.2)
        count = int(args.rate * args.seconds)
        summary = produce(settings, count=count, rate=args.rate, patients=2000, seed=11)
        if consumer.wait(timeout=300) != 0:
            raise SystemExit(f"consumer failed; see {tmp / 'consumer.log'}")

        reader = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False,
                               auto_offset_reset="earliest", consumer_timeout_ms=3000)
        reader.assign([TopicPartition(settings.topic, p) for p in range(3)])
        produced_ms = {(r.partition, r.offset): r.timestamp for r in reader}
        reader.close()
        es.indices.refresh(index=settings.es_index)
        latencies = []
        resp = es.search(index=settings.es_index, size=10_000, scroll="1m",
                         source=["ingested_at", "source.partition", "source.offset"])
        while resp["hits"]["hits"]:
            for hit in resp["hits"]["hits"]:
                doc = hit["_source"]
                sent = produced_ms[(doc["source"]["partition"], doc["source"]["offset"])] / 1000
                latencies.append(datetime.fromisoformat(doc["ingested_at"]).timestamp() - sent)
            resp = es.scroll(scroll_id=resp["_scroll_id"], scroll="1m")
    finally:
        if consumer.poll() is None:
            consumer.terminate()
            consumer.wait(timeout=60)
        admin.delete_topics([settings.topic, settings.dlq_topic])
        admin.close()
        es.options(ignore_status=404).indices.delete(index=f"{settings.es_index}*")
        es.options(ignore_status=404).indices.delete_index_template(name=settings.es_index)
        es.close()

    ms = [value * 1000 for value in latencies]
    section = "\n".join([
        "## Latency, produce to indexed, at a steady rate",
        "",
        f"Command: `.venv/bin/python bench/bench_latency.py --rate {args.rate:g} --seconds {args.seconds:g}` — "
        f"{machine()}; Kafka, Elasticsearch, producer and consumer on the same machine.",
        "",
        f"{summary.sent} readings sent at {summary.rate_per_s:,.0f}/s (target {args.rate:g}/s); latency of the "
        f"{len(ms)} anomaly documents = `ingested_at` (consumer) − Kafka CreateTime (producer):",
        "",
        "| p50 | p99 | max |",
        "|---:|---:|---:|",
        f"| {percentile(ms, 50):.0f} ms | {percentile(ms, 99):.0f} ms | {max(ms):.0f} ms |",
        "",
        "A document is searchable at the index's next refresh (`refresh_interval` 1 s), so "
        "produce-to-searchable adds up to one second to these figures.",
        "",
    ])
    print(section)
    args.out.write_text(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
