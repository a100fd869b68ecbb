"""Producer benchmark: our ``produce()`` against raw kafka-python on pre-serialised payloads.

    .venv/bin/python bench/bench_producer.py --count 200000

Both use the same producer configuration (``bp_core.simulation.stream.PRODUCER_CONFIG``: acks=all,
lz4, linger 20 ms, 256 KiB batches) on a fresh topic each; the topics are deleted after.
Prints a markdown section and writes it to docs/bench-producer.md.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def raw_baseline(settings, topic: str, count: int, patients: int) -> float:
    """msgs/s of KafkaProducer.send over payloads serialised before the clock starts."""
    from bp_core.simulation.stream import connect, iter_payloads, stream_cohort

    payloads = list(iter_payloads(stream_cohort(patients=patients, seed=1, rate=None), limit=count))
    producer = connect(settings)
    began = time.perf_counter()
    for key, value in payloads:
        producer.send(topic, value=value, key=key)
    producer.flush()
    elapsed = time.perf_counter() - began
    producer.close()
    return count / elapsed


def ours(settings, topic: str, count: int, patients: int) -> float:
    from bp_core.simulation.stream import produce

    # Its Patients go to a topic of its own too (deleted with the others).
    summary = produce(settings.with_(topic=topic, patients_topic=f"{topic}.patients"), count=count,
                      patients=patients, seed=1)
    assert summary.failed == 0, summary.line()
    return summary.sent / summary.elapsed_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--out", default=str(ROOT / "docs" / "bench-producer.md"))
    args = parser.parse_args()

    import kafka
    from kafka.admin import NewTopic

    from bp_core.clients import kafka_admin
    from bp_core.settings import Settings

    settings = Settings.from_env()
    admin = kafka_admin(settings, "bp-bench")
    topics = [f"bp-bench-{kind}-{uuid.uuid4().hex[:8]}" for kind in ("raw", "ours")]
    admin.create_topics([NewTopic(name=t, num_partitions=3, replication_factor=1) for t in topics])
    try:
        raw_rate = raw_baseline(settings, topics[0], args.count, args.patients)
        our_rate = ours(settings, topics[1], args.count, args.patients)
    finally:
        admin.delete_topics([t for t in admin.list_topics() if t.startswith(tuple(topics))])
        admin.close()

    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    section = f"""## Producer throughput

Command: `.venv/bin/python bench/bench_producer.py --count {args.count}` ({args.patients} patients,
fresh 3-partition topics on the local broker {settings.kafka_bootstrap}, deleted afterwards).
Config for both: acks=all, lz4, linger_ms=20, batch_size=256 KiB.

| producer | msgs/s |
|---|---:|
| raw kafka-python `send()` of pre-serialised payloads | {raw_rate:,.0f} |
| `bp_core.simulation.stream.produce()` (simulate + serialise + send + count acks) | {our_rate:,.0f} |
| **ratio ours / raw** | **{our_rate / raw_rate:.2f}** |

Machine: {nproc} CPUs, {_cpu_model()}; Python {platform.python_version()}, kafka-python {kafka.__version__},
{platform.system()} {platform.release()}. The broker runs on the same machine.
"""
    print(section)
    Path(args.out).write_text("# Producer benchmark\n\n" + section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
