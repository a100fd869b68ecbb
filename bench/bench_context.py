"""Benchmark: the patient-context store's own work, and restoring it on assignment.

    .venv/bin/python bench/bench_context.py --patients 10000 --restore-patients 100000

1. ``PatientStore.apply`` per reading, in batches of ``--batch`` readings of
   ``--patients`` simulated patients whose windows are full (steady state): the
   consumer's case (``Reading`` objects, in order), the same as columns, with half of
   the readings late (each patient's readings delivered in swapped pairs), and replays;
2. ``encode`` / ``decode`` per patient, at the simulator's pace (a full 7-day window of
   42 readings) and at the cap (``MAX_READINGS``), and the changelog value sizes.
   Parts 1 and 2 run in this process, no Kafka; times are CPU seconds of this process
   (``time.process_time``: the machine is shared), medians of ``--rounds`` rounds.
3. Restoring ``--restore-patients`` patients on assignment through the product's own
   path: a changelog topic per consumer group (``changelog_topic``, ``CHANGELOG_CONFIG``,
   3 partitions) is filled the way the consumer fills it (one ``PatientStore`` applies a
   batch holding one reading of every patient, then each changed patient's ``encode``d
   state goes through librdkafka's producer, keyed by patient id: ``KafkaRecordSink``);
   then a real ``bp consume`` joins that group (its source topic empty), restores every
   partition before scoring and logs "patient state of partition(s) ... restored: N
   patients from M changelog records in X s". Cases: one record per patient (compacted),
   the last ``--records-per-patient`` states of each (not compacted yet), and windows at
   the cap; RSS of the process when it logs its assignment (just before restoring) and
   after the restore, against a group with an empty changelog. Wall-clock, median of
   ``--rounds`` ``bp consume`` runs.

The context model against the single-reading model is in ``bench_training.py`` (the
training path logs both). Writes ``docs/bench-context.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import re
import os
import platform
import shlex
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from common import BP, REPO, bench_settings, bp_env, drop_bench_resources, rss_mib

from bp_core.context import MAX_READINGS, PatientStore  # noqa: E402
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


RESTORED = re.compile(r"restored: (\d+) patients from (\d+) changelog records in ([\d.]+)s")


def fill_changelogs(settings, patients: int, count: int, every_ms: int, topics: dict[str, int]) -> float:
    """Apply ``count`` batches, each one reading of every patient (``every_ms`` apart), as
    the consumer does, and write each changed patient's state to every topic of
    ``topics`` whose value (how many of the last batches it keeps) covers the batch.
    Returns the seconds it took."""
    from bp_core import clients
    from bp_core.sinks.kafka_records import KafkaRecordSink

    started = time.monotonic()
    store = PatientStore()
    sink = KafkaRecordSink(clients.fast_producer(settings, "bench-changelog"), "patient-state changelog")
    ids = [f"{i:08x}-0000-4000-8000-{count:012x}" for i in range(patients)]
    for k in range(count):
        result = store.apply_columns(ids, [f"{p}/{k}" for p in ids], [1_735_689_600_000 + k * every_ms] * patients,
                                     [110.0 + (i * 7 + k * 3) % 40 for i in range(patients)],
                                     [65.0 + (i * 5 + k) % 25 for i in range(patients)])
        for topic, last in topics.items():
            if k >= count - last:
                for patient in result.changed:
                    sink.add(topic, patient.encode(), store.encode(patient))
        if len(sink):
            sink.flush()
            sink = KafkaRecordSink(sink.producer, sink.name)
    return time.monotonic() - started


def restore_run(settings, group: str) -> dict:
    """One ``bp consume`` joining ``group``: its restore line and RSS before and after."""
    env = bp_env(settings.with_(consumer_group=group))
    proc = subprocess.Popen([BP, "consume", "--model-refresh", "3600"], env=env, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(600, proc.kill)
    watchdog.start()
    out, tail = {}, []
    try:
        for line in proc.stderr:
            tail = (tail + [line])[-20:]
            if "assigned partitions" in line and "rss_before" not in out:
                out["rss_before"] = rss_mib(proc.pid)
            found = RESTORED.search(line)
            if found:
                out.update(rss_after=rss_mib(proc.pid), patients=int(found.group(1)), records=int(found.group(2)),
                           seconds=float(found.group(3)))
                proc.terminate()
                break
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.stderr.read()  # to the end, so its last lines do not block it
        proc.wait(timeout=120)
    if "seconds" not in out:
        raise SystemExit(f"bp consume did not restore (exit {proc.returncode}):\n{''.join(tail)}")
    return out


def restore_on_assignment(args) -> dict:
    """The restore cases, each run ``--rounds`` times; RSS compared with an empty changelog."""
    from bp_core.consumer.state import CHANGELOG_CONFIG, changelog_topic
    from bp_core.provisioning import ensure_topic

    settings = bench_settings("context")
    groups = {case: f"{settings.consumer_group}-{case}" for case in ("empty", "week", "week-log", "cap")}
    try:
        for case, group in groups.items():
            # Not compacted yet: one segment too large to roll, so the log cleaner (which
            # cleans rolled segments only) leaves it whole, as a cleaner behind would.
            config = {**CHANGELOG_CONFIG, "segment.bytes": str(2**30)} if case == "week-log" else CHANGELOG_CONFIG
            ensure_topic(settings, changelog_topic(group), partitions=3, config=config)
        n = args.restore_patients
        fill = {"week": fill_changelogs(settings, n, 42, 4 * HOUR_MS, {changelog_topic(groups["week"]): 1,
                                        changelog_topic(groups["week-log"]): args.records_per_patient}),
                "cap": fill_changelogs(settings, n, MAX_READINGS, 60_000, {changelog_topic(groups["cap"]): 1})}
        runs = {case: [restore_run(settings, group) for _ in range(args.rounds)] for case, group in groups.items()}
    finally:
        drop_bench_resources(settings)
    empty_after = statistics.median(r["rss_after"] for r in runs["empty"])
    out = {"fill": fill}
    for case, case_runs in runs.items():
        median = sorted(case_runs, key=lambda r: r["seconds"])[len(case_runs) // 2]
        out[case] = {**median, "runs": [r["seconds"] for r in case_runs],
                     "added_mib": statistics.median(r["rss_after"] - r["rss_before"] for r in case_runs),
                     "over_empty_mib": statistics.median(r["rss_after"] for r in case_runs) - empty_after}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=10_000, help="patients of the apply stream")
    parser.add_argument("--batch", type=int, default=5_000, help="readings per apply call (a consumer batch)")
    parser.add_argument("--restore-patients", type=int, default=100_000, help="patients in the changelogs (0: skip)")
    parser.add_argument("--records-per-patient", type=int, default=4, help="states per patient, not compacted")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "bench-context.md")
    args = parser.parse_args()

    print("apply ...", flush=True)
    rates = apply_rates(args)
    print("encode/decode ...", flush=True)
    codec = codec_rates(args)
    print("restore on assignment ...", flush=True)
    restore = restore_on_assignment(args) if args.restore_patients else None

    command = ".venv/bin/python bench/bench_context.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    load = os.getloadavg()[0]
    lines = [
        "## Patient context: the store's own work, and its restore on assignment",
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
    ]
    if restore:
        lines += restore_lines(args, restore, codec)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"written to {args.out}")
    return 0


def restore_lines(args, restore: dict, codec: dict) -> list[str]:
    n = args.restore_patients
    cases = {"empty": "an empty changelog (the same process without state)",
             "week": "one record per patient (compacted), 7-day windows at the simulator's pace (42 readings)",
             "week-log": f"the last {args.records_per_patient} states of each patient (not compacted yet: one "
                         "segment, not rolled, which the log cleaner leaves alone), the same windows",
             "cap": f"one record per patient, windows at the cap ({MAX_READINGS} readings)"}
    lines = [
        f"Restoring {n:,} patients on assignment: a real `bp consume` joins a group whose changelog holds them "
        f"and restores its 3 partitions before its first batch; seconds from its own log line (median of "
        f"{args.rounds} runs), RSS of the process when it logs the assignment and after the restore "
        "(target: <= 10 s for 100,000 patients):",
        "",
        "| changelog | patients | records read | restore s | runs (s) | RSS added by the restore | RSS over the "
        "empty-changelog run | RSS per 100,000 patients |",
        "|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for case, what in cases.items():
        r = restore[case]
        per_100k = f"{r['over_empty_mib'] * 100_000 / n:,.0f} MiB" if case != "empty" else ""
        lines.append(f"| {what} | {r['patients']:,} | {r['records']:,} | {r['seconds']:.2f} | "
                     f"{', '.join(f'{s:.2f}' for s in r['runs'])} | {r['added_mib']:+,.0f} MiB | "
                     f"{r['over_empty_mib']:+,.0f} MiB | {per_100k} |")
    week = restore["week"]
    lines += [
        "",
        f"Decoding alone would take about {codec['week']['decode_us'] * n / 1e6:.2f} s of the compacted restore "
        f"({codec['week']['decode_us']:.2f} µs per patient above): the rest is reading the records from Kafka. "
        f"{week['seconds'] * 100_000 / n:.1f} s per 100,000 patients (compacted). Filling the changelogs (applying "
        f"every batch and producing the states) took {restore['fill']['week']:.0f} s and "
        f"{restore['fill']['cap']:.0f} s, not part of the figures.",
        "",
    ]
    return lines


if __name__ == "__main__":
    sys.exit(main())
