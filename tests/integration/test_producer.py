"""``bp produce`` against the real broker: keys, valid Observations, ordering, pacing,
Patients published before their readings, sane times, scenarios, and no identity in logs."""

import logging
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient
from kafka import KafkaConsumer

from bp_core.fhir.parse import parse_payload
from bp_core.reading import Reading
from bp_core.simulation.scenarios import FLEETS, OFFSET_FLEET
from tests.integration.helpers import read_all

BP = str(Path(sys.executable).with_name("bp"))


@pytest.fixture
def patients_topic(kafka_admin, topic):
    """This test's own patients topic (``bp produce`` creates it); deleted afterwards."""
    name = f"{topic}.patients"
    yield name
    try:
        kafka_admin.delete_topics([name])
    except Exception:  # best effort: a leftover test topic is harmless
        pass


def _produce(settings, patients_topic, *args, verbose=False):
    env = {**os.environ, "BP_TOPIC": settings.topic, "BP_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
           "BP_PATIENTS_TOPIC": patients_topic}
    began = time.monotonic()
    done = subprocess.run([BP, *(["-v"] if verbose else []), "produce", *args], capture_output=True, text=True,
                          timeout=120, env=env)
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


def test_produce_count(settings, patients_topic):
    done, _ = _produce(settings, patients_topic, "--count", "500", "--patients", "20", "--seed", "7")
    finished = datetime.now(timezone.utc)
    assert done.returncode == 0, done.stderr
    assert "sent 500, failed 0" in done.stderr and "20 patients published" in done.stderr
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
    latest = max(effective for series in readings.values() for _, effective in series)
    assert latest <= finished, "no reading dated in the future"
    assert (finished - latest).total_seconds() < 4 * 3600 + 120, "the last readings end about now"


def test_every_subject_has_its_patient_before_its_first_reading(settings, patients_topic, kafka_admin):
    from kafka.admin import ConfigResource, ConfigResourceType

    done, _ = _produce(settings, patients_topic, "--count", "600", "--patients", "40", "--seed", "3")
    assert done.returncode == 0, done.stderr
    observations = read_all(settings.kafka_bootstrap, settings.topic)
    patients = read_all(settings.kafka_bootstrap, patients_topic)
    assert len(observations) == 600 and len(patients) == 40

    # As a consumer of both topics sees them: each Patient was written (its record's
    # CreateTime) no later than the first Observation of its subject, on the same key.
    first_reading = {}
    for record in observations:
        observation = Observation.model_validate_json(record.value)
        subject = observation.subject.reference.removeprefix("Patient/")
        assert record.key.decode() == subject
        assert observation.device.reference.startswith("Device/") and observation.device.display
        first_reading[subject] = min(first_reading.get(subject, record.timestamp), record.timestamp)
    for record in patients:
        patient = Patient.model_validate_json(record.value)
        assert record.key.decode() == patient.id
        assert patient.name[0].family and patient.birthDate
        assert record.timestamp <= first_reading[patient.id]
    assert {record.key.decode() for record in patients} == set(first_reading)

    configs = kafka_admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, patients_topic,
                                                           {"cleanup.policy": None})])
    assert configs["topic"][patients_topic]["cleanup.policy"]["value"] == "compact"
    (description,) = kafka_admin.describe_topics([patients_topic])
    assert len(description["partitions"]) == 3, "as many partitions as the readings topic"


def test_produce_rate(settings, patients_topic):
    done, elapsed = _produce(settings, patients_topic, "--count", "300", "--rate", "200", "--patients", "10")
    finished = datetime.now(timezone.utc)
    assert done.returncode == 0, done.stderr
    assert "sent 300" in done.stderr
    summary_elapsed = float(re.search(r"elapsed ([0-9.]+) s", done.stderr).group(1))
    assert 1.0 <= summary_elapsed <= 3.0  # 300 messages at 200/s: ~1.5 s
    assert elapsed < 30
    records = read_all(settings.kafka_bootstrap, settings.topic)
    assert len(records) == 300
    for record in records:
        effective = datetime.fromisoformat(orjson.loads(record.value)["effectiveDateTime"])
        sent = datetime.fromtimestamp(record.timestamp / 1000, timezone.utc)
        assert effective <= sent, "stamped before it was sent"
        assert (sent - effective).total_seconds() < 5, "near the wall clock"
    assert max(datetime.fromisoformat(orjson.loads(r.value)["effectiveDateTime"]) for r in records) <= finished


def test_an_endless_stream_without_rate_holds_readings_until_due(settings, patients_topic):
    """Two patients, 4 h apart: a week of history (42 slots each) is sent at once, then the
    next reading is hours away, so nothing more is sent in the three seconds."""
    done, _ = _produce(settings, patients_topic, "--patients", "2", "--duration", "3")
    finished = datetime.now(timezone.utc)
    assert done.returncode == 0, done.stderr
    assert "sent 84, failed 0" in done.stderr
    records = read_all(settings.kafka_bootstrap, settings.topic)
    assert max(datetime.fromisoformat(orjson.loads(r.value)["effectiveDateTime"]) for r in records) <= finished


def _by_patient_and_order(records):
    series = defaultdict(list)
    for record in records:
        resource = orjson.loads(record.value)
        values = {c["code"]["coding"][0]["code"]: c["valueQuantity"]["value"] for c in resource["component"]}
        series[record.key].append((resource["effectiveDateTime"], values["8480-6"], values["8462-4"],
                                   resource["device"]["display"]))
    return {key: sorted(rows) for key, rows in series.items()}


def test_cuff_offset_scenario_end_to_end(settings, patients_topic, kafka_admin, topic):
    """The same seed in both worlds: the same patients and devices; the offset fleet reads
    +15/+8 higher on average, the others the same."""
    from tests.stack_fixtures import create_topic

    offset_topic = create_topic(kafka_admin, f"{topic}-offset")
    try:
        base, _ = _produce(settings, patients_topic, "--count", "800", "--patients", "40", "--seed", "5")
        shifted, _ = _produce(settings.with_(topic=offset_topic), patients_topic, "--count", "800",
                              "--patients", "40", "--seed", "5", "--scenario", "cuff-offset")
        assert base.returncode == 0 and shifted.returncode == 0, base.stderr + shifted.stderr
        base_series = _by_patient_and_order(read_all(settings.kafka_bootstrap, settings.topic))
        offset_series = _by_patient_and_order(read_all(settings.kafka_bootstrap, offset_topic))
    finally:
        kafka_admin.delete_topics([offset_topic])
    assert base_series.keys() == offset_series.keys() and len(base_series) == 40
    fleets = {key: rows[0][3] for key, rows in offset_series.items()}
    assert sum(model == OFFSET_FLEET for model in fleets.values()) == 8, "20 % of 40 patients"
    assert set(fleets.values()) == {fleet.name for fleet in FLEETS}
    differences = defaultdict(list)
    for key, rows in offset_series.items():
        for (_, sys_b, dia_b, _), (_, sys_o, dia_o, _) in zip(base_series[key], rows):
            differences[fleets[key] == OFFSET_FLEET].append((sys_o - sys_b, dia_o - dia_b))
    mean = {fleet: [sum(d[i] for d in diffs) / len(diffs) for i in (0, 1)] for fleet, diffs in differences.items()}
    # The two runs start seconds apart: a reading crossing a day boundary may differ a little.
    assert mean[True] == pytest.approx([15, 8], abs=1.5)
    assert mean[False] == pytest.approx([0, 0], abs=1.5)


def test_producer_logs_carry_no_identity(settings, patients_topic, caplog):
    """Neither the command's own output (with -v) nor the product's log records name a patient."""
    from bp_core.simulation.stream import produce

    done, _ = _produce(settings, patients_topic, "--count", "200", "--patients", "20", "--seed", "9", verbose=True)
    assert done.returncode == 0, done.stderr
    # The product's loggers at DEBUG. (kafka-python's own DEBUG records dump request bytes,
    # payloads included: the CLI keeps the "kafka" logger at WARNING even with -v.)
    with caplog.at_level(logging.DEBUG, logger="bp_core"):
        summary = produce(settings.with_(patients_topic=patients_topic), count=200, patients=20, seed=9)
    assert summary.patients == 20
    identities = set()
    for record in read_all(settings.kafka_bootstrap, patients_topic):
        patient = orjson.loads(record.value)
        identities |= {patient["name"][0]["family"], *patient["name"][0]["given"], patient["birthDate"]}
    assert len(identities) > 20
    logs = done.stdout + done.stderr + caplog.text
    assert "bp_core.producer" in caplog.text, "the producer's own records were captured"
    leaked = sorted(identity for identity in identities if identity in logs)
    assert not leaked, f"identities in logs: {len(leaked)}"
