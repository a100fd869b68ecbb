"""Consumer throughput, end to end, against the real local stack, as ratios in one run.

    .venv/bin/python bench/bench_consumer.py --messages 100000 --repeat 5 [--arms ...] [--compare PATH]

A fresh topic is filled by ``bp produce`` (cohort readings, 2,000 patients). Two models
are registered in a temporary MLflow store with the same champion (one artifact): the
bench's ``BP_MODEL_NAME`` with no challenger, and ``<name>-shadowed`` whose challenger
(trained on other data) differs from it. Then ``--repeat`` rounds, each of:

- raw read: a kafka-python consumer with ``bp consume``'s fetch settings that reads
  every message and does nothing with it: the ceiling of any Python consumer here;
- ``bp consume``, the command a user runs, once per arm, in an order that rotates from
  round to round, each with a group, index and archive of its own (so every run does the
  whole work); its rate is the one its own summary line gives. Arms (``--arms``):
  ``now`` (the defaults: patient state on, a champion, no challenger), ``no-state``
  (``BP_PATIENT_CONTEXT=off``), ``no-deltas`` (state on, the rise and drop from baseline
  off: the state's own work without the anomalies it adds), ``shadow``
  (``BP_MODEL_NAME=<name>-shadowed``: the consumer also scores every batch with the
  challenger), ``refresh-1s`` (the run's index made from the product's template, then
  its ``refresh_interval`` set to Elasticsearch's default through the index settings
  API, as an operator would); ``--compare PATH`` adds the same command running another
  working tree's ``bp_core`` (the code before a change, say), serving the champion's
  run's single-reading model (code older than patient context cannot serve the other).

Ratios are between arms of the same run (medians, and round by round); ``--warmup``
untimed runs come first (a freshly started Elasticsearch spends several times the CPU per
document while its JIT compiles the indexing path). Once: the seed-style loop of the
original brief (one ``predict_proba`` and one index request per message) on ``--sample``
messages.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import time
from pathlib import Path

from common import REPO, consume, drop_bench_resources, machine, bench_settings, write_section

from bp_core.sinks.es_template import REFRESH_INTERVAL  # noqa: E402


def fill_topic(settings, count: int) -> None:
    from bp_core.simulation.stream import produce

    summary = produce(settings, count=count, patients=2000, seed=7)
    if summary.failed:
        raise SystemExit(f"bp produce lost {summary.failed} messages")


SHADOWED = "-shadowed"  # the suffix of the registered model whose challenger differs from its champion
SINGLE = "-single"      # the suffix of the registered model whose champion is the run's single-reading model


def register_models(settings) -> dict:
    """The champion (trained on 60,000 readings) under ``settings.model_name``, alone;
    the same artifact as champion of ``<name>-shadowed``, beside a challenger trained
    on other data; the champion's run's single-reading model as champion of
    ``<name>-single``. Returns the versions and names."""
    import mlflow

    from bp_core.model.registry import CHALLENGER, CHAMPION, client_for, set_alias
    from bp_core.model.training import train_and_register
    from bp_core.simulation.datasets import generate_dataset

    client = client_for(settings.mlflow_tracking_uri)
    data = generate_dataset(settings.data_dir / "bench-train", patients=300, readings=60_000, seed=3)
    champion = train_and_register(settings, data, seed=3)
    set_alias(client, settings.model_name, CHAMPION, champion.model_version)
    client.delete_registered_model_alias(settings.model_name, CHALLENGER)  # champion only
    shadowed = settings.model_name + SHADOWED
    copy = mlflow.register_model(f"runs:/{champion.run_id}/model", shadowed)
    set_alias(client, shadowed, CHAMPION, copy.version)
    other = generate_dataset(settings.data_dir / "bench-train-other", patients=300, readings=60_000, seed=4)
    challenger = train_and_register(settings.with_(model_name=shadowed), other, seed=4)  # gets 'challenger'
    single = settings.model_name + SINGLE  # the commit before the removal serves only single-reading models
    single_version = mlflow.register_model(f"runs:/{champion.run_id}/single_reading_model", single)
    set_alias(client, single, CHAMPION, single_version.version)
    return {"champion": champion.model_version, "shadowed": shadowed, "shadowed_champion": str(copy.version),
            "challenger": challenger.model_version, "single": single}


def arm_catalogue(models: dict) -> dict[str, tuple[str, dict]]:
    """Each arm: what differs from ``now``, and the keyword arguments of ``common.consume``."""
    return {
        "now": ("the defaults: patient state on, a champion, no challenger", {}),
        "no-state": ("patient state off (`BP_PATIENT_CONTEXT=off`)", {"BP_PATIENT_CONTEXT": "off"}),
        "shadow": (f"challenger v{models['challenger']} in shadow beside the same champion "
                   f"(`BP_MODEL_NAME={models['shadowed']}`)", {"BP_MODEL_NAME": models["shadowed"]}),
        "no-deltas": ("patient state on, the rise and drop from baseline off (`BP_BASELINE_*_DELTA=1000`): "
                      "the state's own work, with about the anomalies of `no-state`",
                      {"BP_BASELINE_SYSTOLIC_DELTA": "1000", "BP_BASELINE_DIASTOLIC_DELTA": "1000"}),
        "refresh-1s": ("the index refreshing every 1 s (Elasticsearch's default; the template's is "
                       f"{REFRESH_INTERVAL})", {"refresh_interval": "1s"}),
    }


def shadow_scored(settings, models: dict) -> int:
    """Readings the challenger has shadow-scored so far, from its evidence in MLflow."""
    from bp_core.model.registry import client_for
    from bp_core.model.shadow import read_evidence

    return read_evidence(client_for(settings.mlflow_tracking_uri), models["shadowed"], models["challenger"],
                         models["shadowed_champion"]).readings


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


def rounds(settings, args, arms: dict[str, dict], models: dict) -> tuple[list[float], dict[str, list], list[int]]:
    """``args.repeat`` rounds of a raw read then every arm, rotating the arms' order.
    Also returns the readings each ``shadow`` run shadow-scored (its evidence's growth)."""
    raw, runs, scored = [], {name: [] for name in arms}, []
    names = list(arms)
    for round_ in range(args.repeat):
        raw.append(raw_read(settings, args.messages))
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            before = shadow_scored(settings, models) if name == "shadow" else 0
            runs[name].append(consume(settings, f"{name}-{round_}", **arms[name]))
            if name == "shadow":
                scored.append(shadow_scored(settings, models) - before)
            print(f"round {round_ + 1}: raw {raw[-1]:,.0f}/s, {name} {runs[name][-1].rate:,.0f}/s", flush=True)
    return raw, runs, scored


TARGETS = {  # arm: (the ratio reported, its target, the issue)
    "no-state": ("`now` (state on) / `no-state`", 0.7, "issue 24: with state >= 0.7x without"),
    "shadow": ("`shadow` / `now`", 0.85, "issue 23: <= 15 % fewer messages/s with a challenger in shadow"),
}


def ratio_rows(runs: dict[str, list]) -> list[str]:
    """The ratio of each arm to ``now``: of the medians and round by round (same round)."""
    rows = []
    now = [run.rate for run in runs["now"]]
    for name, arm_runs in runs.items():
        if name == "now":
            continue
        arm = [run.rate for run in arm_runs]
        flip = name == "no-state"  # the target is about state on against off
        pairs = [(n / a if flip else a / n) for n, a in zip(now, arm)]
        ratio = (statistics.median(now) / statistics.median(arm) if flip
                 else statistics.median(arm) / statistics.median(now))
        label, target, why = TARGETS.get(name, (f"`{name}` / `now`", None, "no target: the cost of the setting"))
        met = "" if target is None else ("yes" if ratio >= target else "NO")
        rows.append(f"| {label} | {ratio:.3f} | {', '.join(f'{p:.2f}' for p in pairs)} | "
                    f"{statistics.median(pairs):.3f} | {why} | {met} |")
    if "no-deltas" in runs and "no-state" in runs:  # the state's own cost, the anomalies alike
        pairs = [a.rate / b.rate for a, b in zip(runs["no-deltas"], runs["no-state"])]
        ratio = statistics.median(r.rate for r in runs["no-deltas"]) / statistics.median(r.rate for r in runs["no-state"])
        rows.append(f"| `no-deltas` / `no-state` | {ratio:.3f} | {', '.join(f'{p:.2f}' for p in pairs)} | "
                    f"{statistics.median(pairs):.3f} | no target: the state's own work, without the anomalies "
                    "it adds | |")
    return rows


def time_columns(times: str) -> dict[str, float]:
    """``bp consume``'s ``time:`` line as {stage: seconds}."""
    return {key: float(value) for key, value in re.findall(r"(\w+)=([\d.]+)s", times)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--arms", default="now,no-state,no-deltas,shadow,refresh-1s",
                        help="comma-separated, from: now, no-state, no-deltas, shadow, refresh-1s")
    parser.add_argument("--sample", type=int, default=2000, help="messages for the seed-style loop")
    parser.add_argument("--compare", type=Path, help="a working tree whose bp consume runs as a second arm")
    parser.add_argument("--compare-label", default="before", help="its name in the report (letters, digits, -)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "bench-consumer.md")
    args = parser.parse_args()
    names = ["now"] + [name for name in args.arms.split(",") if name and name != "now"]

    settings = bench_settings("consumer")
    try:
        fill_topic(settings, args.messages)
        models = register_models(settings)
        catalogue = arm_catalogue(models)
        unknown = [name for name in names if name not in catalogue]
        if unknown:
            raise SystemExit(f"unknown arm(s): {', '.join(unknown)}")
        arms = {name: catalogue[name][1] for name in names}
        if args.compare:
            catalogue[args.compare_label] = (f"`bp_core` of `{args.compare}`{commit_of(args.compare)}, serving the "
                                             "champion's run's single-reading model (`BP_MODEL_NAME="
                                             f"{models['single']}`)", {})
            arms[args.compare_label] = {"checkout": args.compare.resolve(), "BP_MODEL_NAME": models["single"]}
        for i in range(args.warmup):
            consume(settings, f"warmup-{i}")
        raw, runs, scored = rounds(settings, args, arms, models)
        seed = seed_style(settings, args.sample)
    finally:
        drop_bench_resources(settings)
    write_section(args.out, report(args, models, catalogue, raw, runs, scored, seed))
    return 0


def commit_of(tree: Path) -> str:
    done = subprocess.run(["git", "-C", str(tree), "log", "-1", "--format=%h"], capture_output=True, text=True)
    return f" (commit {done.stdout.strip()})" if done.returncode == 0 else ""


def report(args, models, catalogue, raw, runs, scored, seed) -> list[str]:
    raw_median = statistics.median(raw)
    ours = statistics.median(run.rate for run in runs["now"])
    command = (f".venv/bin/python bench/bench_consumer.py --messages {args.messages} --repeat {args.repeat} "
               f"--arms {args.arms}"
               + (f" --compare {args.compare} --compare-label {args.compare_label}" if args.compare else ""))
    lines = [
        "## Consumer throughput, end to end",
        "",
        f"Command: `{command}` — {machine()}; Kafka, Elasticsearch and the consumer on the same machine. "
        f"{args.messages:,} cohort readings of 2,000 patients; `bp consume` serves champion v{models['champion']}; "
        f"medians of {args.repeat} rounds (the arms' order rotating) after {args.warmup} warm-up runs.",
        "",
        "| path | what differs | messages/s | runs | vs raw read | anomalies indexed |",
        "|---|---|---:|---|---:|---:|",
        f"| raw kafka-python read | no work | {raw_median:,.0f} | {', '.join(f'{r:,.0f}' for r in raw)} | 1.00× | |",
    ]
    for name, arm_runs in runs.items():
        rate = statistics.median(run.rate for run in arm_runs)
        lines.append(f"| `bp consume`, {name} | {catalogue[name][0]} | {rate:,.0f} | "
                     f"{', '.join(f'{run.rate:,.0f}' for run in arm_runs)} | {rate / raw_median:.3f}× | "
                     f"{statistics.median(run.anomalies for run in arm_runs):,.0f} |")
    lines += [
        f"| seed-style loop ({args.sample:,} messages) | one predict and one index request per message | "
        f"{seed:,.0f} | 1 run | {seed / raw_median:.4f}× | |",
        "",
        f"`bp consume` (`now`) runs {ours / seed:,.0f}× the seed-style loop.",
    ]
    if len(runs) > 1:
        lines += ["", "Ratios between arms of this run (round by round: each arm against `now` of the same round):", "",
                  "| ratio | of the medians | round by round | median of the rounds | target | met |",
                  "|---|---:|---|---:|---|---|", *ratio_rows(runs)]
    if scored:
        lines += ["", f"Readings the challenger shadow-scored in each `shadow` run (its MLflow evidence's growth): "
                  f"{', '.join(f'{n:,}' for n in scored)} of {args.messages:,}."]
    stages = {name: time_columns(sorted(arm_runs, key=lambda r: r.rate)[len(arm_runs) // 2].times)
              for name, arm_runs in runs.items()}
    columns = next((list(t) for t in stages.values() if t), [])
    if columns:
        lines += ["", "Where the time went, in each arm's median run (its own `time:` line, seconds; the consumer "
                  "thread polls and prepares while a writer thread makes the batch before durable):", "",
                  "| arm | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
        lines += [f"| {name} | " + " | ".join(f"{t.get(c, 0):.2f}" for c in columns) + " |"
                  for name, t in stages.items() if t]
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
