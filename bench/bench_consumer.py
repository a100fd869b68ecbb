"""Consumer throughput, end to end, against the real local stack, as ratios in one run.

    .venv/bin/python bench/bench_consumer.py --messages 100000 [--profile]

On one fresh topic filled by ``bp produce`` with realistic cohort readings:

1. raw read: a plain kafka-python consumer reading every message (the ceiling for any
   Python consumer: it does nothing with the bytes);
2. ours: ``ConsumerService`` (parse, validate, rules, one vectorised model call per
   batch, bulk index anomalies, archive + fsync, commit), serving a champion model
   registered in a temporary MLflow store;
3. seed-style: the original brief's loop on a sample: per message ``json.loads``,
   one ``predict_proba`` call and one Elasticsearch ``index`` request per anomaly, one
   archive write per normal.

Prints a markdown section (and writes it to ``--out``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def drop_bench_resources(settings, admin) -> None:
    """Delete a benchmark's topics, indices and index template (and close ``admin``)."""
    from elasticsearch import Elasticsearch

    admin.delete_topics([settings.topic, settings.dlq_topic])
    admin.close()
    es = Elasticsearch(settings.es_url)
    es.options(ignore_status=404).indices.delete(index=f"{settings.es_index}*")
    es.options(ignore_status=404).indices.delete_index_template(name=settings.es_index)
    es.close()


def fill_topic(settings, count: int) -> float:
    from bp_core.producer import produce

    started = time.monotonic()
    summary = produce(settings, count=count, patients=2000, seed=7)
    assert summary.failed == 0, summary
    return time.monotonic() - started


def register_champion(settings) -> str:
    from bp_core.dataset import generate_dataset
    from bp_core.model.promotion import promote
    from bp_core.model.training import train_and_register

    data = generate_dataset(settings.data_dir / "bench-train", patients=300, readings=60_000, seed=3)
    result = train_and_register(settings, data, seed=3)
    promote(settings, holdout_readings=20_000)
    return result.model_version


def raw_read(settings, count: int) -> float:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False,
                             auto_offset_reset="earliest", max_poll_records=5000,
                             fetch_max_bytes=64 * 1024 * 1024, max_partition_fetch_bytes=8 * 1024 * 1024)
    consumer.assign([TopicPartition(settings.topic, p) for p in consumer.partitions_for_topic(settings.topic)])
    seen, size = 0, 0
    started = None
    while seen < count:
        for records in consumer.poll(timeout_ms=1000).values():
            if started is None:
                started = time.monotonic()
            seen += len(records)
            size += sum(len(r.value) for r in records)
    elapsed = time.monotonic() - started
    consumer.close()
    return elapsed


def ours(settings, profile: bool):
    from bp_core.consumer.service import ConsumerOptions, ConsumerService

    service = ConsumerService(settings, ConsumerOptions(exit_when_idle=2.0, model_refresh=3600))
    profiler = None
    if profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.001)
        profiler.start()
    assert service.run() == 0
    if profiler:
        profiler.stop()
    elapsed = service.stats.last_commit_at - service.stats.first_batch_at
    return elapsed, service.stats, profiler


def seed_style(settings, sample: int) -> tuple[float, int]:
    """The brief's loop: one predict call and one index request per message."""
    from elasticsearch import Elasticsearch
    from kafka import KafkaConsumer, TopicPartition

    from bp_core.features import feature_matrix
    from bp_core.model.serving import ModelProvider

    provider = ModelProvider(settings)
    provider.start()
    model = provider.current
    es = Elasticsearch(settings.es_url)
    index = f"seed-style-{settings.es_index}"  # outside the strict template's pattern
    archive = open(settings.data_dir / "seed-style-archive.json", "a")
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False,
                             auto_offset_reset="earliest")
    consumer.assign([TopicPartition(settings.topic, p) for p in consumer.partitions_for_topic(settings.topic)])
    import numpy as np

    done = 0
    started = time.monotonic()
    for message in consumer:
        obs = json.loads(message.value)
        values = {c["code"]["coding"][0]["code"]: c["valueQuantity"]["value"] for c in obs["component"]}
        systolic, diastolic = values["8480-6"], values["8462-4"]
        probability = float(model.predict_proba(feature_matrix(np.array([systolic], float), np.array([diastolic], float)))[0])
        anomaly = systolic > 140 or systolic < 90 or diastolic > 90 or diastolic < 60 or probability >= 0.5
        doc = {"observation_id": obs["id"], "patient": obs["subject"]["reference"], "systolic": systolic,
               "diastolic": diastolic, "probability": probability}
        if anomaly:
            es.index(index=index, id=obs["id"], document=doc)
        else:
            archive.write(json.dumps(doc) + "\n")
            archive.flush()
        done += 1
        if done >= sample:
            break
    elapsed = time.monotonic() - started
    consumer.close()
    archive.close()
    es.options(ignore_status=404).indices.delete(index=index)
    es.close()
    return elapsed, done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--seed-style-sample", type=int, default=3000)
    parser.add_argument("--profile", action="store_true", help="profile our consumer with pyinstrument")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "bench-consumer.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    from bp_core.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="bp-bench-"))
    run_id = uuid.uuid4().hex[:8]
    settings = Settings.from_env().with_(
        topic=f"bench-bp-{run_id}", consumer_group=f"bench-{run_id}", es_index=f"bench-anomalies-{run_id}",
        archive_dir=tmp / "archive", data_dir=tmp / "data", mlflow_tracking_uri=f"sqlite:///{tmp}/mlflow.db")
    settings.data_dir.mkdir(parents=True)
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    admin.create_topics([NewTopic(settings.topic, 3, 1), NewTopic(settings.dlq_topic, 1, 1)])
    try:
        fill_seconds = fill_topic(settings, args.messages)
        version = register_champion(settings)
        raw_seconds = raw_read(settings, args.messages)
        our_seconds, stats, profiler = ours(settings, args.profile)
        seed_seconds, seed_done = seed_style(settings, args.seed_style_sample)
    finally:
        drop_bench_resources(settings, admin)

    raw_rate = args.messages / raw_seconds
    our_rate = stats.messages / our_seconds
    seed_rate = seed_done / seed_seconds
    lines = [
        "## Consumer throughput (end to end)",
        "",
        f"Command: `.venv/bin/python bench/bench_consumer.py --messages {args.messages}"
        f"{' --profile' if args.profile else ''}` — {machine()}; Kafka, Elasticsearch and the consumer on the same machine.",
        "",
        "| path | messages | seconds | messages/s | ratio |",
        "|---|---:|---:|---:|---:|",
        f"| raw kafka-python read (ceiling) | {args.messages} | {raw_seconds:.2f} | {raw_rate:,.0f} | 1.00 |",
        f"| bp consume (model v{version}, rules, ES bulk, archive fsync, commit) | {stats.messages} | {our_seconds:.2f} | {our_rate:,.0f} | {our_rate / raw_rate:.2f} × raw |",
        f"| seed-style loop (per-message predict + index) | {seed_done} | {seed_seconds:.2f} | {seed_rate:,.0f} | {seed_rate / raw_rate:.3f} × raw |",
        "",
        f"bp consume is **{our_rate / raw_rate:.2f}×** the raw read and **{our_rate / seed_rate:.0f}×** the seed-style loop. "
        f"Of {stats.messages} messages: {stats.anomalies} anomalies indexed, {stats.normals} normals archived, "
        f"{stats.rejected} rejected; {stats.batches} batches. Filling the topic with `bp produce` took {fill_seconds:.1f} s.",
    ]
    if profiler:
        text = profiler.output_text(unicode=False, color=False, show_all=False)
        lines += ["", "Profile of bp consume (pyinstrument, top of the tree):", "", "```",
                  *text.splitlines()[:60], "```"]
    section = "\n".join(lines) + "\n"
    print(section)
    args.out.write_text(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
