"""Benchmark: the patient-context store's own work, its memory, and context for training.

    .venv/bin/python bench/bench_context.py --patients 10000 --restore-patients 100000 --rows 1000000

Measures, on this machine, in this process (no Kafka: the store is pure):
1. ``PatientStore.apply`` per reading, in batches of ``--batch`` readings of
   ``--patients`` simulated patients whose windows are full (steady state): the
   consumer's case (``Reading`` objects, in order), the same as columns, with half of
   the readings late (each patient's readings delivered in swapped pairs), and replays;
2. ``encode`` / ``decode`` per patient, at the simulator's pace (a full 7-day window of
   42 readings) and at the cap (``MAX_READINGS``), and the changelog value sizes;
3. ``restore`` of ``--restore-patients`` patients from (key, value) records, and the
   resident set size (RSS) per 100,000 patients, each in a fresh subprocess;
4. the context of a ``--rows``-reading data set (``context_of_frame``) and ``fit_both``
   (both models on one split) against ``fit_and_evaluate`` (the single-reading model).

Times are CPU seconds of this process (``time.process_time``): the machine is shared, and
wall-clock time would also count the other processes' turns. Each figure is the median
of ``--rounds`` rounds. Writes ``docs/bench-context.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bp_core.context import MAX_READINGS, PatientStore, context_of_frame  # noqa: E402
from bp_core.context.history import effective_ms  # noqa: E402
from bp_core.context.store import decode_state, encode_state  # noqa: E402
from bp_core.reading import Reading  # noqa: E402
from bp_core.simulation.cohort import Cohort  # noqa: E402

HOUR_MS = 3_600_000


def cpu(fn, *args):
    started = time.process_time()
    result = fn(*args)
    return result, time.process_time() - started


def stream(patients: int, readings: int, seed: int):
    """Columns of a simulated stream, in Kafka order (patients interleave, 4 h apart)."""
    frame = Cohort(patients, seed).readings_frame(readings)
    return frame, (frame["patient_id"].tolist(), frame["observation_id"].tolist(), effective_ms(frame).tolist(),
                   frame["systolic_mm_hg"].astype(float).tolist(), frame["diastolic_mm_hg"].astype(float).tolist())


def as_readings(columns, start: int, stop: int) -> list[Reading]:
    from datetime import datetime, timezone

    patients, observations, times, systolic, diastolic = (c[start:stop] for c in columns)
    return [Reading(o, p, datetime.fromtimestamp(t / 1000, tz=timezone.utc), s, d)
            for p, o, t, s, d in zip(patients, observations, times, systolic, diastolic)]


def swapped_pairs(columns, patients: int):
    """The same readings, each patient's consecutive pairs delivered newest first."""
    n = len(columns[0])
    order = np.arange(n)
    pair = order // (2 * patients)
    within = order % (2 * patients)
    swapped = pair * 2 * patients + np.where(within < patients, within + patients, within - patients)
    swapped = swapped[swapped < n]
    return [np.asarray(c, dtype=object)[swapped].tolist() for c in columns]


def apply_rates(args) -> dict:
    """µs per reading for each way of applying a steady-state stream."""
    warm_per_patient, timed_per_patient = 48, 12   # 8 days to fill the windows, then 2 days timed
    patients = args.patients
    _, columns = stream(patients, (warm_per_patient + timed_per_patient) * patients, args.seed)
    warm = warm_per_patient * patients
    warm_columns = [c[:warm] for c in columns]
    timed = [c[warm:] for c in columns]
    late = swapped_pairs(timed, patients)
    readings = as_readings(columns, warm, len(columns[0]))
    results: dict[str, list[float]] = {"readings": [], "columns": [], "late": [], "replay": []}
    late_share = []
    for _ in range(args.rounds):
        for name in results:
            store = PatientStore()
            store.apply_columns(*warm_columns)
            batches = range(0, len(timed[0]), args.batch)
            if name == "replay":
                for start in batches:
                    store.apply_columns(*(c[start:start + args.batch] for c in timed))
            seconds = 0.0
            for start in batches:
                if name == "readings":
                    _, took = cpu(store.apply, readings[start:start + args.batch])
                else:
                    source = late if name == "late" else timed
                    result, took = cpu(store.apply_columns, *(c[start:start + args.batch] for c in source))
                    if name == "late":
                        late_share.append(float(np.mean(result.context.outcome == 1)))
                seconds += took
            results[name].append(seconds / len(timed[0]) * 1e6)
    rates = {name: statistics.median(values) for name, values in results.items()}
    rates["late_share"] = statistics.median(late_share)
    return rates


def codec_rates(args) -> dict:
    """µs per patient to encode and decode, and value sizes, at two window sizes."""
    out = {}
    for label, every_ms in (("week", 4 * HOUR_MS), ("cap", 60_000)):
        store = PatientStore()
        n = 2000
        count = 42 if label == "week" else MAX_READINGS
        ids = [f"patient-{i}" for i in range(n)]
        rows = [(p, f"{p}-{k}", 1_735_689_600_000 + k * every_ms, 120.0 + k % 9, 80.0 - k % 5)
                for k in range(count) for p in ids]
        store.apply_columns(*zip(*rows))
        states = [store.state(p) for p in ids]
        encode, decode = [], []
        for _ in range(args.rounds):
            values, took = cpu(lambda: [encode_state(s) for s in states])
            encode.append(took / n * 1e6)
            _, took = cpu(lambda: [decode_state(v) for v in values])
            decode.append(took / n * 1e6)
        size = len(values[0])
        out[label] = {"readings": states[0].count, "bytes": size, "encode_us": statistics.median(encode),
                      "decode_us": statistics.median(decode), "lz4": _compressed(values, "lz4"),
                      "zstd": _compressed(values, "zstd")}
    return out


def _compressed(values: list[bytes], codec: str) -> float:
    """Compressed share of a producer batch of such values (as Kafka compresses batches)."""
    batch = b"".join(values[:200])
    if codec == "lz4":
        import lz4.frame

        return len(lz4.frame.compress(batch)) / len(batch)
    import zstandard

    return len(zstandard.ZstdCompressor().compress(batch)) / len(batch)


RSS_CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from bp_core.context import PatientStore

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024

patients, count, every = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
# The changelog's records, built one patient at a time so they are all that is held.
records = []
for i in range(patients):
    store = PatientStore()
    key = f"{i:08x}-0000-8000-8000-000000000000"
    store.apply_columns([key] * count, [f"{key}/{k}" for k in range(count)],
                        [1_735_689_600_000 + k * every for k in range(count)],
                        [120.0 + k % 9 for k in range(count)], [80.0] * count)
    records.append((key.encode(), store.encode(key)))
before = rss()
store = PatientStore()
started = time.process_time()
store.restore(records)
seconds = time.process_time() - started
after = rss()  # the records are still held: the difference is the store's
print(json.dumps({"patients": len(store), "restore_s": seconds, "rss_bytes": after - before}))
"""


def restore_and_rss(args) -> dict:
    out = {}
    for label, count, every in (("week", 42, 4 * HOUR_MS), ("cap", MAX_READINGS, 60_000)):
        runs = []
        for _ in range(args.rounds):
            child = subprocess.run([sys.executable, "-c", RSS_CHILD, str(REPO), str(args.restore_patients), str(count),
                                    str(every)], capture_output=True, text=True, check=True)
            runs.append(json.loads(child.stdout))
        out[label] = {"readings": count, "restore_s": statistics.median(r["restore_s"] for r in runs),
                      "rss_mib_per_100k": statistics.median(r["rss_bytes"] for r in runs) / 2**20
                      * 100_000 / args.restore_patients}
    return out


def training(args) -> dict:
    from bp_core.model.training import fit_and_evaluate, fit_both
    from bp_core.settings import Settings

    patients = max(20, args.rows // 200)
    frame = Cohort(patients, args.seed).readings_frame(args.rows)
    settings = Settings()
    _, context_s = cpu(context_of_frame, frame)
    _, single_s = cpu(lambda: fit_and_evaluate(frame, settings, seed=args.seed))
    fits, both_s = cpu(lambda: fit_both(frame, settings, seed=args.seed))
    return {"rows": args.rows, "patients": patients, "context_s": context_s, "single_s": single_s, "both_s": both_s,
            "fits": fits}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=10_000, help="patients of the apply stream")
    parser.add_argument("--batch", type=int, default=5_000, help="readings per apply call (a consumer batch)")
    parser.add_argument("--restore-patients", type=int, default=100_000)
    parser.add_argument("--rows", type=int, default=1_000_000, help="readings of the training data set (0: skip)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "bench-context.md")
    args = parser.parse_args()

    print("apply ...", flush=True)
    rates = apply_rates(args)
    print("encode/decode ...", flush=True)
    codec = codec_rates(args)
    print("restore and RSS ...", flush=True)
    memory = restore_and_rss(args)
    train = training(args) if args.rows else None

    command = ".venv/bin/python bench/bench_context.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    load = os.getloadavg()[0]
    lines = [
        "## Patient context: the store's own work",
        "",
        f"Command: `{command}` — {os.cpu_count()} cores, Python {platform.python_version()}; CPU time of the "
        f"benchmark process (medians of {args.rounds} rounds); load average {load:.1f} when it ended.",
        "",
        f"Applying batches of {args.batch:,} readings of {args.patients:,} patients with full 7-day windows "
        "(48 readings each, 4 h apart, applied first; then 12 more per patient timed):",
        "",
        "| what | µs per reading |",
        "|---|---:|",
        f"| `apply(readings)`, in order: the consumer's case (effective times converted from datetimes) | "
        f"{rates['readings']:.2f} |",
        f"| `apply_columns`, in order | {rates['columns']:.2f} |",
        f"| `apply_columns`, each patient's pairs swapped ({rates['late_share']:.0%} of readings late) | "
        f"{rates['late']:.2f} |",
        f"| `apply_columns`, the same batches again (replays) | {rates['replay']:.2f} |",
        "",
        "Changelog values (`encode` / `decode`, 2,000 patients):",
        "",
        "| window | readings | bytes | encode µs/patient | decode µs/patient | lz4 | zstd |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *[f"| {'7 days at the simulator pace' if k == 'week' else 'the cap, every minute'} | {v['readings']} | "
          f"{v['bytes']:,} | {v['encode_us']:.2f} | {v['decode_us']:.2f} | {v['lz4']:.0%} | {v['zstd']:.0%} |"
          for k, v in codec.items()],
        "",
        "(lz4 / zstd: a 200-value batch's compressed size, as a producer with that compression would send it.)",
        "",
        f"Restoring {args.restore_patients:,} patients from their changelog values (`restore`, decode only: reading "
        "the records from Kafka is the consumer's part), and the RSS the restored store adds, in a fresh process:",
        "",
        "| window | readings | restore s | RSS per 100,000 patients |",
        "|---|---:|---:|---:|",
        *[f"| {'7 days at the simulator pace' if k == 'week' else 'the cap'} | {v['readings']} | "
          f"{v['restore_s']:.2f} | {v['rss_mib_per_100k']:,.0f} MiB |" for k, v in memory.items()],
        "",
    ]
    if train:
        fits = train["fits"]
        single, context = fits.single_reading.metrics, fits.context.metrics
        lines += [
            f"Training data with history: {train['rows']:,} simulated readings of {train['patients']:,} patients.",
            "",
            "| step | CPU s |",
            "|---|---:|",
            f"| context of every reading (`context_of_frame`, the store over the data set) | "
            f"{train['context_s']:.1f} |",
            f"| single-reading model: split, features, fit, hold-out metrics (`fit_and_evaluate`) | "
            f"{train['single_s']:.1f} |",
            f"| both models on one split, context included (`fit_both`) | {train['both_s']:.1f} |",
            "",
            "| hold-out | single-reading | context |",
            "|---|---:|---:|",
            *[f"| {key} | {single[key]:.4f} | {context[key]:.4f} |" for key in
              ("pr_auc", "roc_auc", "precision", "recall", "brier", "crisis_recall", "hypotension_recall")],
            f"| false alarms at recall {fits.false_alarms['recall']:.4f} | "
            f"{fits.false_alarms['reference_false_alarms']:,.0f} | "
            f"{fits.false_alarms['candidate_false_alarms']:,.0f} |",
            "",
        ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
