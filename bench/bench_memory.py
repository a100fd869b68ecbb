"""Consumer memory over a long stream: RSS after 100k and after 1M messages (flat = no leak).

    .venv/bin/python bench/bench_memory.py --messages 1000000

Fills a fresh topic with ``bp produce`` (5,000 patients), then runs ``bp consume`` (rules
only, patient state on: the state of 5,000 patients is part of the figure) and samples
the process's resident set size (``/proc/PID/status``) each time its consumed counter
(Prometheus ``/metrics``) crosses a checkpoint.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import REPO, RunningConsumer, bench_settings, drop_bench_resources, machine, rss_mib, write_section


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "bench-memory.md")
    args = parser.parse_args()
    checkpoints = sorted({c for c in (10_000, 100_000, 250_000, 500_000, 750_000, args.messages) if c <= args.messages})

    from bp_core.simulation.stream import produce

    settings = bench_settings("memory")
    samples: list[tuple[int, float]] = []
    consumer = None
    try:
        started = time.monotonic()
        summary = produce(settings, count=args.messages, patients=5000, seed=5)
        fill_seconds = time.monotonic() - started
        consumer = RunningConsumer(settings, "--exit-when-idle", "10", BP_PATIENT_CONTEXT="on")
        pending = list(checkpoints)
        consume_started = time.monotonic()
        while pending and consumer.process.poll() is None:
            done = consumer.consumed()
            while pending and done >= pending[0]:
                samples.append((pending.pop(0), rss_mib(consumer.pid)))
            time.sleep(0.05)
        consume_seconds = time.monotonic() - consume_started
        if pending:
            raise SystemExit(f"consumer stopped early; see {consumer.log_path}")
    finally:
        if consumer is not None:
            consumer.stop()
        drop_bench_resources(settings)

    by_count = dict(samples)
    first = min(100_000, args.messages)
    growth = by_count[args.messages] - by_count[first]
    write_section(args.out, [
        "## Consumer memory over a long stream",
        "",
        f"Command: `.venv/bin/python bench/bench_memory.py --messages {args.messages}` — {machine()}.",
        "",
        f"{summary.sent:,} messages of 5,000 patients produced in {fill_seconds:.0f} s, then consumed by one "
        f"`bp consume` (batches of 5000, rules only, patient state on) in about {consume_seconds:.0f} s; resident "
        "set size when the consumed counter passed each mark:",
        "",
        "| messages consumed | RSS |",
        "|---:|---:|",
        *[f"| {count:,} | {mib:.0f} MiB |" for count, mib in samples],
        "",
        f"From {first:,} to {args.messages:,} messages the RSS changed by {growth:+.0f} MiB.",
    ])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
