"""Benchmark: the drift targets of issue 25, on the sinks a real consumer wrote.

    .venv/bin/python bench/bench_drift.py [--patients 1000] [--windows 20] [--big 1000000]

A champion (the model the training path registers: the context model) is trained on the
data set the data DAG makes by default (500 patients, 50,000 readings, the ``baseline``
world) in a throw-away MLflow store. Each part streams the simulator's Observations
(``Cohort``, with its device fleets, sent as ``bp produce`` sends them:
``iter_payloads``) into a fresh topic, where a real ``bp consume`` serves that champion
with patient state on and writes its sinks (index + archive); each batch is waited for
until durable, and ``check_drift`` reads the window of the last batches back by
ingestion time, as ``bp drift`` does. Parts 1 and 2 first stream a warm-up of
``--warmup-per-patient`` readings per patient (default 42: 7 days at the simulator's pace,
every patient's window full), outside every window, as in a running deployment.

1. cuff-offset: ``--patients`` patients, 5 batches of 1,000 readings in the ``baseline``
   world, then the same patients in the ``cuff-offset`` world (the simulator's scenario:
   the ``HomeCheck Pro`` fleet, 20 % of the patients, reads +15/+8 mmHg; truths
   unchanged). After every batch of 1,000 since the switch, the window of the last 5,000
   readings is checked: the target is drift reported (the report's ``drift`` and the
   fleet's segment) within 5,000 readings.
2. stationary: a fresh seed, ``--windows`` consecutive windows of 5,000 readings: the
   target is no drift in any.
3. speed: ``bp drift --json`` (a subprocess, start-up included) over a window of
   ``--big`` readings: the target is <= 30 s.

Writes the section ``--section`` (docs/bench-drift.md), which bench/report.py includes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from common import BP, REPO, RunningConsumer, bench_settings, bp_env, drop_bench_resources

from bp_core.clients import elasticsearch  # noqa: E402
from bp_core.drift import check_drift  # noqa: E402
from bp_core.model.registry import CHAMPION, client_for, set_alias  # noqa: E402
from bp_core.model.training import train_and_register  # noqa: E402
from bp_core.simulation.cohort import Cohort, history_start  # noqa: E402
from bp_core.simulation.datasets import generate_dataset  # noqa: E402
from bp_core.simulation.scenarios import BASELINE, CUFF_OFFSET, CUFF_OFFSET_MM_HG, FLEETS, OFFSET_FLEET  # noqa: E402
from bp_core.simulation.stream import connect, iter_payloads  # noqa: E402

WINDOW = 5_000
STEP = 1_000


class Deployment:
    """A fresh topic, index and archive, a ``bp consume`` serving the champion on them,
    and the time each streamed batch was durable (the windows' bounds)."""

    def __init__(self, base, name: str, patients: int, seed: int, planned: int) -> None:
        # The bench's MLflow store and data folder (model cache, reference data set).
        self.settings = bench_settings(f"drift-{name}").with_(mlflow_tracking_uri=base.mlflow_tracking_uri,
                                                              data_dir=base.data_dir)
        self.consumer = RunningConsumer(self.settings, "--model-refresh", "3600", BP_PATIENT_CONTEXT="on")
        self.consumer.wait_for("assigned partitions")
        self.producer = connect(self.settings)
        self.es = elasticsearch(self.settings, request_timeout=120)
        start = history_start(datetime.now(timezone.utc), planned, patients)  # every reading in the past
        self.cohorts = {world: Cohort(patients, seed, start, scenario=world) for world in (BASELINE, CUFF_OFFSET)}
        self.sent = 0
        self.marks: list[datetime] = [datetime.now(timezone.utc)]  # its start, then each batch durable

    def stream(self, readings: int, world: str = BASELINE) -> None:
        """Send the next ``readings`` of the stream (from ``world``), wait until durable."""
        for key, value in iter_payloads(self.cohorts[world], first=self.sent, limit=readings):
            self.producer.send(self.settings.topic, key=key, value=value)
        self.producer.flush()
        self.sent += readings
        self.consumer.wait_consumed(self.sent, timeout=1800)
        self.es.indices.refresh(index=self.settings.es_index)  # searchable now, not at the next refresh
        self.marks.append(datetime.now(timezone.utc))

    def check(self, batches: int):
        """``check_drift`` over the last ``batches`` batches streamed."""
        start, end = self.marks[-1 - batches], self.marks[-1]
        return check_drift(self.settings, since=end - start, now=end, es=self.es)

    def close(self) -> None:
        self.producer.close()
        self.consumer.stop()
        self.es.close()
        drop_bench_resources(self.settings)


def worst(report) -> tuple[float, str]:
    """The largest score/threshold ratio of a report, and where."""
    entries = [(name, c) for name, c in report.features.items()]
    entries += [(f"{fleet}/{name}", c) for fleet, s in report.segments.items() for name, c in s.features.items()]
    name, c = max(entries, key=lambda e: e[1].score / e[1].threshold if e[1].score == e[1].score else 0)
    return c.score / c.threshold, name


def cuff_offset(dep: Deployment, patients: int, warmup: int) -> dict:
    dep.stream(warmup * patients)
    for _ in range(WINDOW // STEP):
        dep.stream(STEP)
    before = dep.check(WINDOW // STEP)
    found = {"overall": None, "fleet": None, "other_fleets": False}
    rows = []
    for k in range(1, WINDOW // STEP + 1):
        dep.stream(STEP, CUFF_OFFSET)
        report = dep.check(WINDOW // STEP)
        fleet = report.segments[OFFSET_FLEET]
        if report.drift and found["overall"] is None:
            found["overall"] = k * STEP
        if fleet.drift and found["fleet"] is None:
            found["fleet"] = k * STEP
        found["other_fleets"] |= any(s.drift for f, s in report.segments.items() if f != OFFSET_FLEET)
        rows.append((k * STEP, report.drift, fleet.drift, fleet.features["systolic_mm_hg"].score,
                     fleet.features["systolic_mm_hg"].threshold, report.features["systolic_mm_hg"].score,
                     report.features["systolic_mm_hg"].threshold, worst(report)))
    return {"before": before.drift, "before_worst": worst(before), "found": found, "rows": rows}


def stationary(dep: Deployment, patients: int, windows: int, warmup: int) -> dict:
    dep.stream(warmup * patients)
    results = []
    for _ in range(windows):
        dep.stream(WINDOW)
        report = dep.check(1)
        results.append((report.readings, report.drift, *worst(report)))
    return {"windows": results, "drifted": sum(r[1] for r in results)}


def speed(dep: Deployment, readings: int) -> dict:
    started = time.perf_counter()
    dep.stream(readings)
    fill_s = time.perf_counter() - started
    started = time.perf_counter()
    report = dep.check(1)
    in_process_s = time.perf_counter() - started
    started = time.perf_counter()
    proc = subprocess.run([BP, "drift", "--json", "--since", "1d"], env=bp_env(dep.settings), capture_output=True,
                          text=True, timeout=600)
    cli_s = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"bp drift failed: {proc.stderr.strip()}")
    cli = json.loads(proc.stdout)
    if cli["window"]["readings"] != report.readings:
        raise SystemExit(f"bp drift read {cli['window']['readings']:,} readings, check_drift {report.readings:,}")
    return {"fill_s": fill_s, "in_process_s": in_process_s, "cli_s": cli_s, "readings": report.readings,
            "cli_readings": cli["window"]["readings"], "patients": report.patients, "drift": cli["drift"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=1000, help="patients in parts 1 and 2 (default 1000)")
    parser.add_argument("--windows", type=int, default=20, help="stationary windows of 5,000 readings (default 20)")
    parser.add_argument("--big", type=int, default=1_000_000, help="readings in the timed window (0: skip)")
    parser.add_argument("--warmup-per-patient", type=int, default=42,
                        help="readings per patient before the windows (42: 7 days at the simulator's pace, full "
                             "windows as in a running deployment)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--section", type=Path, default=REPO / "docs" / "bench-drift.md",
                        help="the section file bench/report.py includes")
    args = parser.parse_args()

    base = bench_settings("drift")  # its MLflow store and data folder serve every part
    print("training the champion on 50,000 readings of 500 patients ...", flush=True)
    data = generate_dataset(base.data_dir / "training" / "reference", patients=500, readings=50_000, seed=args.seed)
    trained = train_and_register(base, data)
    set_alias(client_for(base.mlflow_tracking_uri), base.model_name, CHAMPION, trained.model_version)
    warmup = args.warmup_per_patient
    parts = {"offset": (args.patients, args.seed + 1, warmup * args.patients + 2 * WINDOW,
                        lambda d: cuff_offset(d, args.patients, warmup)),
             "stationary": (args.patients, args.seed + 2, warmup * args.patients + args.windows * WINDOW,
                            lambda d: stationary(d, args.patients, args.windows, warmup)),
             "speed": (max(args.patients, args.big // 100), args.seed + 3, args.big, lambda d: speed(d, args.big))}
    results, seconds = {}, {}
    try:
        for name, (patients, seed, planned, run) in parts.items():
            if name == "speed" and not args.big:
                continue
            print(f"{name} ...", flush=True)
            started = time.monotonic()
            dep = Deployment(base, name, patients, seed, planned)
            try:
                results[name] = run(dep)
            finally:
                dep.close()
            seconds[name] = time.monotonic() - started
    finally:
        drop_bench_resources(base)

    lines = section(args, results, seconds, trained.model_version)
    args.section.parent.mkdir(parents=True, exist_ok=True)
    args.section.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def section(args, results: dict, seconds: dict, version: str) -> list[str]:
    command = ".venv/bin/python bench/bench_drift.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    fleets = ", ".join(f"{fleet.name} {fleet.share:.0%}" for fleet in FLEETS)
    offset, still = results["offset"], results["stationary"]
    found = offset["found"]

    def within(n):
        return f"after {n:,} readings" if n is not None else f"not within {WINDOW:,} readings"

    lines = [
        "# Drift benchmark",
        "",
        f"Command: `{command}`  ",
        f"Machine: {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, Python {platform.python_version()}  ",
        f"Reference: champion v{version} (the context model) and its training data, 50,000 readings of 500 "
        "patients (the data DAG's default).  ",
        f"Live streams: {args.patients:,} simulated patients (speed: {results.get('speed', {}).get('patients', 0):,}), "
        f"device fleets {fleets}, sent to Kafka and written to the sinks (Elasticsearch index + archive) by a real "
        "`bp consume` serving the champion with patient state on, each after a warm-up of "
        f"{args.warmup_per_patient} readings per patient outside the windows; read back by `check_drift`.  ",
        "Durations: " + ", ".join(f"{name} {s:.0f} s" for name, s in seconds.items()) + ".",
        "",
        "| target | result | met |",
        "|---|---|---|",
        f"| `cuff-offset` (fleet {OFFSET_FLEET}, +{CUFF_OFFSET_MM_HG[0]:g}/+{CUFF_OFFSET_MM_HG[1]:g} mmHg): drift "
        "within 5,000 readings of the switch, "
        f"window = last 5,000 readings checked every 1,000 | report `drift` {within(found['overall'])}; "
        f"`{OFFSET_FLEET}` segment {within(found['fleet'])}; other fleets flagged: "
        f"{'yes' if found['other_fleets'] else 'no'} | "
        f"{'yes' if found['overall'] and found['fleet'] and not found['other_fleets'] else 'NO'} |",
        f"| stationary baseline, fresh seed: no drift in {len(still['windows'])} consecutive windows of 5,000 "
        f"| {still['drifted']} window(s) with drift; largest score/threshold "
        f"{max(w[2] for w in still['windows']):.2f} | {'yes' if still['drifted'] == 0 else 'NO'} |",
    ]
    if "speed" in results:
        sp = results["speed"]
        lines.append(f"| `bp drift --json` over {sp['cli_readings']:,} readings: <= 30 s | {sp['cli_s']:.1f} s "
                     f"(in-process `check_drift` {sp['in_process_s']:.1f} s; filling the sinks took "
                     f"{sp['fill_s']:.0f} s, not part of the target) | {'yes' if sp['cli_s'] <= 30 else 'NO'} |")
    ratio, where = offset["before_worst"]
    lines += ["", f"Before the switch (the last 5,000 `baseline` readings): drift "
              f"{'reported' if offset['before'] else 'not reported'} (largest score/threshold {ratio:.2f}, {where}). "
              "After it, the window of the last 5,000 readings (systolic, Wasserstein in reference SDs):", "",
              "| readings since switch | report drift | fleet drift | fleet score | fleet threshold | overall score | "
              "overall threshold | largest score/threshold |", "|---:|---|---|---:|---:|---:|---:|---|"]
    lines += [f"| {n:,} | {d} | {f} | {fs:.3f} | {ft:.3f} | {os_:.3f} | {ot:.3f} | {w[0]:.2f} ({w[1]}) |"
              for n, d, f, fs, ft, os_, ot, w in offset["rows"]]
    lines += ["", "Stationary windows: readings, drift, largest score/threshold and where:", "",
              "| window | readings | drift | largest score/threshold |", "|---:|---:|---|---|"]
    lines += [f"| {i + 1} | {n:,} | {d} | {r:.2f} ({where}) |" for i, (n, d, r, where) in enumerate(still["windows"])]
    return lines


if __name__ == "__main__":
    sys.exit(main())
