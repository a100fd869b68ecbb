"""Benchmark: the drift targets of issue 25, through the real sinks (Elasticsearch + archive).

    .venv/bin/python bench/bench_drift.py [--patients 1000] [--big 1000000]

A champion is trained on the data set the data DAG makes by default (500 patients,
50,000 readings) in a throw-away MLflow store; readings are scored by it and written to
a throw-away index and archive folder with the sinks' own classes (``SinkFiller``, the
public hook: no Kafka, no consumer), each batch with its own ingestion time, and
``check_drift`` reads them back through the sinks as ``bp drift`` does.

1. cuff-offset: a stream of ``--patients`` patients (three device fleets), stationary,
   then 20 % of the patients (fleet ``cuff-c``) read +15/+8 mmHg. After every 1,000
   readings since the switch, the window of the last 5,000 readings is checked: the
   target is drift reported (the report's ``drift`` and the ``cuff-c`` segment) within
   5,000 readings.
2. stationary: a stream with a fresh seed, 20 consecutive windows of 5,000 readings:
   the target is no drift in any.
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
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bp_core.drift import check_drift  # noqa: E402
from bp_core.drift.fill import FLEETS, SinkFiller, ensure_contract_index, with_fleets  # noqa: E402
from bp_core.model.registry import CHAMPION, client_for, set_alias  # noqa: E402
from bp_core.model.serving import served  # noqa: E402
from bp_core.model.training import train_and_register  # noqa: E402
from bp_core.settings import Settings  # noqa: E402
from bp_core.simulation.cohort import Cohort  # noqa: E402
from bp_core.simulation.datasets import generate_dataset  # noqa: E402

WINDOW = 5_000
STEP = 1_000
OFFSET_FLEET = "cuff-c"


class Deployment:
    """One throw-away index + archive folder, its champion, and a clock of ingestion times."""

    def __init__(self, base: Settings, es, model, version: str, root: Path, name: str) -> None:
        self.settings = base.with_(es_index=f"bench-drift-{name}-{uuid.uuid4().hex[:8]}",
                                   archive_dir=root / f"archive-{name}", topic="blood-pressure")
        self.es = es
        ensure_contract_index(es, self.settings.es_index)
        self.filler = SinkFiller(self.settings, es, served(base.model_name, version, model))
        self.clock = datetime.now(timezone.utc) - timedelta(hours=2)  # one minute per batch, in the past

    def write(self, frame) -> datetime:
        """Write a frame as one batch ingested at the next minute; returns that time."""
        self.clock += timedelta(minutes=1)
        for start in range(0, len(frame), 50_000):
            self.filler.write(frame.iloc[start:start + 50_000], self.clock, refresh=False)
        self.es.indices.refresh(index=self.settings.es_index)
        return self.clock

    def check(self, batches: int):
        """``check_drift`` over the last ``batches`` batches."""
        return check_drift(self.settings, since=timedelta(minutes=batches) - timedelta(seconds=30),
                           now=self.clock + timedelta(seconds=1), es=self.es)

    def drop(self) -> None:
        self.es.options(ignore_status=404).indices.delete(index=self.settings.es_index)
        self.es.options(ignore_status=404).indices.delete_index_template(name=self.settings.es_index)


def worst(report) -> tuple[float, str]:
    """The largest score/threshold ratio of a report, and where."""
    entries = [(name, c) for name, c in report.features.items()]
    entries += [(f"{fleet}/{name}", c) for fleet, s in report.segments.items() for name, c in s.features.items()]
    name, c = max(entries, key=lambda e: e[1].score / e[1].threshold if e[1].score == e[1].score else 0)
    return c.score / c.threshold, name


def cuff_offset(dep: Deployment, patients: int, seed: int) -> dict:
    cohort = Cohort(patients, seed)
    for i in range(4):  # 4 batches of 1,000 so the first windows straddle the switch
        dep.write(with_fleets(cohort.readings_frame(STEP, first=i * STEP)))
    before = dep.check(WINDOW // STEP)
    found = {"overall": None, "fleet": None, "other_fleets": False}
    rows = []
    for k in range(1, WINDOW // STEP + 1):
        dep.write(with_fleets(cohort.readings_frame(STEP, first=(3 + k) * STEP), offset_fleet=OFFSET_FLEET))
        report = dep.check(WINDOW // STEP)
        fleet = report.segments[OFFSET_FLEET]
        if report.drift and found["overall"] is None:
            found["overall"] = k * STEP
        if fleet.drift and found["fleet"] is None:
            found["fleet"] = k * STEP
        found["other_fleets"] |= any(s.drift for f, s in report.segments.items() if f != OFFSET_FLEET)
        rows.append((k * STEP, report.drift, fleet.drift, fleet.features["systolic_mm_hg"].score,
                     fleet.features["systolic_mm_hg"].threshold, report.features["systolic_mm_hg"].score,
                     report.features["systolic_mm_hg"].threshold))
    return {"before": before.drift, "found": found, "rows": rows}


def stationary(dep: Deployment, patients: int, seed: int, windows: int) -> dict:
    cohort = Cohort(patients, seed)
    results = []
    for i in range(windows):
        dep.write(with_fleets(cohort.readings_frame(WINDOW, first=i * WINDOW)))
        report = dep.check(1)
        results.append((report.readings, report.drift, *worst(report)))
    return {"windows": results, "drifted": sum(r[1] for r in results)}


def speed(dep: Deployment, readings: int, patients: int, seed: int, base_env: dict) -> dict:
    cohort = Cohort(max(patients, readings // 100), seed)
    started = time.perf_counter()
    chunk = 100_000
    for start in range(0, readings, chunk):
        dep.write(with_fleets(cohort.readings_frame(min(chunk, readings - start), first=start)))
    fill_s = time.perf_counter() - started
    batches = -(-readings // chunk)
    started = time.perf_counter()
    report = dep.check(batches)
    in_process_s = time.perf_counter() - started
    env = {**base_env, "BP_ES_INDEX": dep.settings.es_index, "BP_ARCHIVE_DIR": str(dep.settings.archive_dir),
           "BP_TOPIC": dep.settings.topic}
    started = time.perf_counter()
    proc = subprocess.run([str(Path(sys.executable).parent / "bp"), "drift", "--json", "--since", "3h"], env=env,
                          capture_output=True, text=True, timeout=600)
    cli_s = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"bp drift failed: {proc.stderr.strip()}")
    cli = json.loads(proc.stdout)
    if cli["window"]["readings"] != readings or report.readings != readings:
        raise SystemExit(f"the window holds {cli['window']['readings']:,} readings, not {readings:,}")
    return {"fill_s": fill_s, "in_process_s": in_process_s, "cli_s": cli_s, "readings": report.readings,
            "cli_readings": cli["window"]["readings"], "patients": report.patients}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=1000, help="patients in the live streams (default 1000)")
    parser.add_argument("--windows", type=int, default=20, help="stationary windows of 5,000 readings (default 20)")
    parser.add_argument("--big", type=int, default=1_000_000, help="readings in the timed window (0: skip)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--section", type=Path, default=REPO / "docs" / "bench-drift.md",
                        help="the section file bench/report.py includes")
    args = parser.parse_args()
    from elasticsearch import Elasticsearch

    with tempfile.TemporaryDirectory(prefix="bench-drift-") as tmp:
        root = Path(tmp)
        base_env = {k: v for k, v in os.environ.items() if not k.startswith(("BP_", "MLFLOW_"))}
        base_env.update({"BP_DATA_DIR": str(root / "data"), "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
                         "BP_ES_URL": os.environ.get("BP_ES_URL", "http://localhost:9200")})
        base = Settings.from_env(base_env)
        print("training the champion on 50,000 readings of 500 patients ...", flush=True)
        data = generate_dataset(root / "data" / "training" / "reference", patients=500, readings=50_000,
                                seed=args.seed)
        trained = train_and_register(base, data)
        set_alias(client_for(base.mlflow_tracking_uri), base.model_name, CHAMPION, trained.model_version)
        es = Elasticsearch(base.es_url, request_timeout=120)
        results = {}
        for name, run in (("offset", lambda d: cuff_offset(d, args.patients, args.seed + 1)),
                          ("stationary", lambda d: stationary(d, args.patients, args.seed + 2, args.windows)),
                          ("speed", lambda d: speed(d, args.big, args.patients, args.seed + 3, base_env))):
            if name == "speed" and not args.big:
                continue
            print(f"{name} ...", flush=True)
            dep = Deployment(base, es, trained.model, trained.model_version, root, name)
            try:
                results[name] = run(dep)
            finally:
                dep.drop()
        es.close()

    lines = section(args, results)
    args.section.parent.mkdir(parents=True, exist_ok=True)
    args.section.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def section(args, results: dict) -> list[str]:
    command = ".venv/bin/python bench/bench_drift.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    fleets = ", ".join(f"{name} {share:.0%}" for name, share in FLEETS)
    offset, still = results["offset"], results["stationary"]
    found = offset["found"]

    def within(n):
        return f"after {n:,} readings" if n is not None else f"not within {WINDOW:,} readings"

    lines = [
        "# Drift benchmark",
        "",
        f"Command: `{command}`  ",
        f"Machine: {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, Python {platform.python_version()}  ",
        "Reference: the champion's training data, 50,000 readings of 500 patients (the data DAG's default).  ",
        f"Live streams: {args.patients:,} patients, device fleets {fleets}, written through the real sinks "
        "(Elasticsearch index + archive) by `SinkFiller`, read back by `check_drift`.",
        "",
        "| target | result | met |",
        "|---|---|---|",
        f"| cuff-offset (fleet {OFFSET_FLEET}, +15/+8 mmHg): drift within 5,000 readings of the switch, "
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
    lines += ["", f"Before the switch (4,000 readings): drift {'reported' if offset['before'] else 'not reported'}. "
              "After it, the window of the last 5,000 readings (systolic, Wasserstein in reference SDs):", "",
              "| readings since switch | report drift | fleet drift | fleet score | fleet threshold | overall score | "
              "overall threshold |", "|---:|---|---|---:|---:|---:|---:|"]
    lines += [f"| {n:,} | {d} | {f} | {fs:.3f} | {ft:.3f} | {os_:.3f} | {ot:.3f} |"
              for n, d, f, fs, ft, os_, ot in offset["rows"]]
    lines += ["", "Stationary windows: readings, drift, largest score/threshold and where:", "",
              "| window | readings | drift | largest score/threshold |", "|---:|---:|---|---|"]
    lines += [f"| {i + 1} | {n:,} | {d} | {r:.2f} ({where}) |" for i, (n, d, r, where) in enumerate(still["windows"])]
    return lines


if __name__ == "__main__":
    sys.exit(main())
