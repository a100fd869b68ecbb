"""``bp produce`` against the real broker: keys, valid Observations, ordering, pacing."""

import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from kafka import KafkaConsumer

from bp_core.fhir.parse import parse_payload
from bp_core.reading import Reading

BP = str(Path(sys.executable).with_name("bp"))


def _produce(settings, *args):
    env = {**os.environ, "BP_TOPIC": settings.topic, "BP_KAFKA_BOOTSTRAP": settings.kafka_bootstrap}
    began = time.monotonic()
    done = subprocess.run([BP, "produce", *args], capture_output=True, text=True, timeout=120, env=env)
    return done, time.monotonic() - began


def _read_all(settings, expected):
    consumer = KafkaConsumer(settings.topic, bootstrap_servers=settings.kafka_bootstrap,
                             auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=5000)
    try:
        messages = []
        deadline = time.monotonic() + 30
        while len(messages) < expected and time.monotonic() < deadline:
            messages.extend(consumer)
        return messages
    finally:
        consumer.close()


def test_produce_count(settings):
    done, _ = _produce(settings, "--count", "500", "--patients", "20", "--seed", "7")
    assert done.returncode == 0, done.stderr
    assert "sent 500, failed 0" in done.stderr
    messages = _read_all(settings, 500)
    assert len(messages) == 500
    partitions, readings = defaultdict(set), defaultdict(list)
    for message in messages:
        (reading,) = parse_payload(message.value)
        assert isinstance(reading, Reading), reading
        assert message.key.decode() == reading.patient_id
        partitions[reading.patient_id].add(message.partition)
        readings[reading.patient_id].append((message.offset, reading.effective))
    assert len(readings) == 20
    assert all(len(p) == 1 for p in partitions.values())
    for series in readings.values():
        times = [effective for _, effective in sorted(series)]
        assert times == sorted(times)


def test_produce_rate(settings):
    done, elapsed = _produce(settings, "--count", "300", "--rate", "200", "--patients", "10")
    assert done.returncode == 0, done.stderr
    assert "sent 300" in done.stderr
    summary_elapsed = float(re.search(r"elapsed ([0-9.]+) s", done.stderr).group(1))
    assert 1.0 <= summary_elapsed <= 3.0  # 300 messages at 200/s: ~1.5 s
    assert elapsed < 30
    assert len(_read_all(settings, 300)) == 300
