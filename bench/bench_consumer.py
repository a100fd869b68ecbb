"""Consumer throughput, end to end, against the real local stack, as ratios in one run.

    .venv/bin/python bench/bench_consumer.py --messages 100000 --repeat 5 [--compare PATH]

A fresh topic is filled by ``bp produce`` (cohort readings, 2,000 patients) and a
champion is registered in a temporary MLflow store. Then ``--repeat`` rounds, each of:

- raw read: a kafka-python consumer with ``bp consume``'s fetch settings that reads
  every message and does nothing with it: the ceiling of any Python consumer here;
- ``bp consume``: the command a user runs (parse, validate, rules, the champion, bulk
  index, archive + fsync, DLQ, commit), with a group, index and archive of its own, so
  every run does the whole work; its rate is the one its own summary line gives;
- ``--compare PATH`` (optional): the same command running the ``bp_core`` of another
  working tree (the code before a change, say), same settings, same topic.

Ratios are between medians of the same run; ``--warmup`` untimed runs of ``bp consume``
come first (a freshly started Elasticsearch spends several times the CPU per document
while its JIT compiles the indexing path). Once: the seed-style loop of the original
brief (one ``predict_proba`` and one index request per message) on ``--sample`` messages.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from common import REPO, consume, drop_bench_resources, machine, bench_settings, write_section


def fill_topic(settings, count: int) -> None:
    from bp_core.simulation.stream import produce

    summary = produce(settings, count=count, patients=2000, seed=7)
    if summary.failed:
        raise SystemExit(f"bp produce lost {summary.failed} messages")


def register_champion(settings) -> str:
    from bp_core.model.promotion import promote
    from bp_core.model.training import train_and_register
    from bp_core.simulation.datasets import generate_dataset

    data = generate_dataset(settings.data_dir / "bench-train", patients=300, readings=60_000, seed=3)
    result = train_and_register(settings, data, seed=3)
    promote(settings, holdout_readings=20_000)
    return result.model_version


def topic_reader(settings, **config):
    """A consumer of no group, assigned every partition of the bench topic from its start."""
    from kafka import TopicPartition

    from bp_core.clients import kafka_consumer

    consumer = kafka_consumer(settings, "bp-bench-reader", **config)
    consumer.assign([TopicPartition(settings.topic, p) for p in consumer.partitions_for_topic(settings.topic)])
    return consumer


def raw_read(settings, count: int) -> float:
    """Messages per second of a read that does nothing with them (from the first record)."""
    consumer = topic_reader(settings, max_poll_records=5000, fetch_max_bytes=64 * 1024 * 1024,
                            max_partition_fetch_bytes=8 * 1024 * 1024, fetch_max_wait_ms=100)
    seen, started = 0, None
    while seen < count:
        for records in consumer.poll(timeout_ms=1000).values():
            started = started or time.monotonic()
            seen += len(records)
    elapsed = time.monotonic() - started
    consumer.close()
    return count / elapsed


def seed_style(settings, sample: int) -> float:
    """The brief's loop: per message json.loads, one predict call, one index request per
    anomaly, one archive write per normal. Messages per second."""
    import numpy as np

    from bp_core.clients import elasticsearch
    from bp_core.features import feature_matrix
    from bp_core.model.serving import ModelProvider

    provider = ModelProvider(settings)
    provider.start()
    model = provider.current
    es = elasticsearch(settings)
    index = f"seed-style-{settings.es_index}"  # outside the strict template's pattern
    archive = open(settings.data_dir / "seed-style-archive.json", "a")
    consumer = topic_reader(settings)
    done, started = 0, time.monotonic()
    for message in consumer:
        obs = json.loads(message.value)
        values = {c["code"]["coding"][0]["code"]: c["valueQuantity"]["value"] for c in obs["component"]}
        systolic, diastolic = values["8480-6"], values["8462-4"]
        probability = float(model.predict_proba(feature_matrix(np.array([systolic], float),
                                                               np.array([diastolic], float)))[0])
        doc = {"observation_id": obs["id"], "patient": obs["subject"]["reference"], "systolic": systolic,
               "diastolic": diastolic, "probability": probability}
        if systolic > 140 or systolic < 90 or diastolic > 90 or diastolic < 60 or probability >= 0.5:
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
    provider.close()
    es.options(ignore_status=404).indices.delete(index=index)
    es.close()
    return done / elapsed


def rounds(settings, args, arms: dict[str, dict]) -> tuple[list[float], dict[str, list]]:
    """``args.repeat`` rounds of a raw read then every arm, rotating the arms' order."""
    raw, runs = [], {name: [] for name in arms}
    names = list(arms)
    for round_ in range(args.repeat):
        raw.append(raw_read(settings, args.messages))
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            runs[name].append(consume(settings, f"{name}-{round_}", **arms[name]))
            print(f"round {round_ + 1}: raw {raw[-1]:,.0f}/s, {name} {runs[name][-1].rate:,.0f}/s", flush=True)
    return raw, runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--sample", type=int, default=2000, help="messages for the seed-style loop")
    parser.add_argument("--compare", type=Path, help="a working tree whose bp consume runs as a second arm")
    parser.add_argument("--compare-label", default="before", help="its name in the report (letters, digits, -)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "bench-consumer.md")
    args = parser.parse_args()

    settings = bench_settings("consumer")
    try:
        fill_topic(settings, args.messages)
        version = register_champion(settings)
        for i in range(args.warmup):
            consume(settings, f"warmup-{i}")
        arms = {"now": {}}
        if args.compare:
            arms[args.compare_label] = {"checkout": args.compare.resolve()}
        raw, runs = rounds(settings, args, arms)
        seed = seed_style(settings, args.sample)
    finally:
        drop_bench_resources(settings)

    raw_median = statistics.median(raw)
    ours = statistics.median(run.rate for run in runs["now"])
    command = (f".venv/bin/python bench/bench_consumer.py --messages {args.messages} --repeat {args.repeat}"
               + (f" --compare {args.compare} --compare-label {args.compare_label}" if args.compare else ""))
    lines = [
        "## Consumer throughput, end to end",
        "",
        f"Command: `{command}` — {machine()}; Kafka, Elasticsearch and the consumer on the same machine. "
        f"{args.messages:,} cohort readings; `bp consume` serves champion v{version}; medians of {args.repeat} "
        f"alternating rounds after {args.warmup} warm-up runs.",
        "",
        "| path | messages/s | vs raw read |",
        "|---|---:|---:|",
        f"| raw kafka-python read (no work) | {raw_median:,.0f} | 1.00× |",
        f"| `bp consume` (parse, score, index, archive, DLQ, commit) | {ours:,.0f} | {ours / raw_median:.3f}× |",
    ]
    for name in arms:
        if name != "now":
            theirs = statistics.median(run.rate for run in runs[name])
            lines.append(f"| `bp consume`, {name} (`{args.compare}`) | {theirs:,.0f} | {theirs / raw_median:.3f}× |")
    lines += [
        f"| seed-style loop ({args.sample:,} messages) | {seed:,.0f} | {seed / raw_median:.4f}× |",
        "",
        f"`bp consume` runs {ours / seed:,.0f}× the seed-style loop. Run by run (raw, bp consume): "
        + ", ".join(f"{r:,.0f}/{o.rate:,.0f}" for r, o in zip(raw, runs["now"])) + ".",
    ]
    for name in arms:
        if name != "now":
            theirs = statistics.median(run.rate for run in runs[name])
            lines.append(f"`bp consume` against {name}: {ours / theirs:.2f}× (medians; run by run "
                         + ", ".join(f"{run.rate:,.0f}" for run in runs[name]) + ").")
    last = runs["now"][-1].times
    if last:
        lines += ["", f"Where the last run's time went (its own summary): {last}."]
    write_section(args.out, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
