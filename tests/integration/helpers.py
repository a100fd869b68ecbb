"""Helpers shared by integration tests: build, send and read back messages."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import orjson

from bp_core.sinks.es_template import wait_until_searchable

REPO = Path(__file__).resolve().parents[2]
BP = str(Path(sys.executable).parent / "bp")


def observation(obs_id: str, patient: str, systolic: float, diastolic: float,
                effective: str = "2026-03-01T08:30:00+00:00") -> dict:
    """A FHIR R4 vital-signs blood-pressure Observation (shape of the HL7 example)."""
    def component(code, display, value):
        return {"code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}]},
                "valueQuantity": {"value": value, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}
    return {
        "resourceType": "Observation", "id": obs_id, "status": "final",
        "meta": {"profile": ["http://hl7.org/fhir/StructureDefinition/bp"]},
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9", "display": "Blood pressure panel"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": effective,
        "component": [component("8480-6", "Systolic blood pressure", systolic),
                      component("8462-4", "Diastolic blood pressure", diastolic)],
    }


def reading(obs_id: str, patient: str, values: tuple, at: datetime) -> tuple[bytes, bytes]:
    """A (key, value) message: one Observation of ``patient`` with (systolic, diastolic) at ``at``."""
    return patient.encode(), dumps(observation(obs_id, patient, *values, effective=at.isoformat()))


def patient_stream(patients: int, readings_each: int, *, seed: int, start: datetime, step=timedelta(hours=3),
                   late_every: int = 0, prefix: str = "o") -> list[tuple[bytes, bytes]]:
    """Messages of a stream of readings in effective-time order, all patients interleaved.

    Patients differ in their usual pressure (some in sustained hypertension); every third
    one's pressure rises by 25/12 mmHg part-way (so some readings rise from their
    baseline). With ``late_every``, every ``late_every``-th reading is sent after the
    following ``2 * patients`` readings: it arrives after later ones of its patient.
    Observation ids are ``<prefix>-<patient>-<n>``.
    """
    rng = random.Random(seed)
    rows = []
    for p in range(patients):
        patient = f"pat-{p:02d}"
        usual_s = rng.uniform(100, 150)
        usual_d = usual_s * 0.6 + rng.uniform(-4, 6)
        change_at = rng.randrange(readings_each // 3, readings_each) if p % 3 == 0 else readings_each
        for i in range(readings_each):
            at = start + step * i + timedelta(minutes=rng.randrange(60))
            shift = (25, 12) if i >= change_at else (0, 0)
            systolic = round(usual_s + shift[0] + rng.gauss(0, 6))
            diastolic = round(min(usual_d + shift[1] + rng.gauss(0, 4), systolic - 20))
            rows.append((at, patient, f"{prefix}-{patient}-{i}", (systolic, diastolic)))
    rows.sort(key=lambda row: row[0])
    if late_every:
        for index in range(len(rows) - 2 * patients - 1, 0, -late_every):
            rows.insert(index + 2 * patients, rows.pop(index))
    return [reading(obs_id, patient, values, at) for at, patient, obs_id, values in rows]


def send(bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes | None]]) -> None:
    """Produce (key, value) pairs with acks=all and wait for every ack."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    futures = [producer.send(topic, key=key, value=value) for key, value in messages]
    producer.flush()
    for future in futures:
        future.get(timeout=30)
    producer.close()


def read_all(bootstrap: str, topic: str, idle_ms: int = 3000) -> list:
    """Every record of a topic, from the beginning, without a group."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             auto_offset_reset="earliest", consumer_timeout_ms=idle_ms)
    partitions = consumer.partitions_for_topic(topic) or set()
    consumer.assign([TopicPartition(topic, p) for p in partitions])
    records = list(consumer)
    consumer.close()
    return records


def read_to_end(bootstrap: str, topic: str) -> list:
    """Every record of a topic up to its end offsets when called, by (partition, offset)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        records = []
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            for batch in consumer.poll(timeout_ms=1000).values():
                records += batch
    finally:
        consumer.close()
    return sorted(records, key=lambda r: (r.partition, r.offset))


def committed_total(bootstrap: str, group: str, topic: str) -> int:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    total = 0
    for p in consumer.partitions_for_topic(topic) or ():
        total += consumer.committed(TopicPartition(topic, p)) or 0
    consumer.close()
    return total


def bp_env(settings, **extra) -> dict:
    """Environment for a `bp` subprocess pointing at a test's own topic/index/folders."""
    env = dict(os.environ)
    env.update({
        "BP_KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "BP_TOPIC": settings.topic,
        "BP_ALERTS_TOPIC": settings.alerts_topic, "BP_PATIENTS_TOPIC": settings.patients_topic,
        "BP_ES_URL": settings.es_url, "BP_ES_INDEX": settings.es_index,
        "BP_ARCHIVE_DIR": str(settings.archive_dir), "BP_DATA_DIR": str(settings.data_dir),
        "BP_CONSUMER_GROUP": settings.consumer_group, "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
    })
    env.update({k: str(v) for k, v in extra.items()})
    return env


def start_consumer(settings, *args: str, log_path: Path, **env) -> subprocess.Popen:
    log = open(log_path, "ab")
    return subprocess.Popen([BP, "consume", *args], env=bp_env(settings, **env), stdout=log, stderr=log,
                            cwd=REPO)


class TcpProxy:
    """A loopback TCP proxy that can cut the line: a server 'going away' for real.

    ``cut()`` closes every connection and refuses new ones; ``hang()`` closes them and
    accepts new ones that never get an answer (a server that is up but stuck, or a
    black-holed route); ``restore()`` forwards again.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(64)
        self.port = self.server.getsockname()[1]
        self.open = threading.Event()
        self.open.set()
        self.hanging = False
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if self.hanging:
                with self._lock:
                    self._conns.append(client)  # held open, never read, never answered
                continue
            if not self.open.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        self.open.clear()
        with self._lock:
            for conn in self._conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                    conn.close()
                except OSError:
                    pass
            self._conns = []

    def hang(self) -> None:
        self.cut()
        self.hanging = True

    def held(self) -> int:
        """Connections accepted since ``hang()`` and left unanswered."""
        with self._lock:
            return len(self._conns) if self.hanging else 0

    def restore(self) -> None:
        self.hanging = False
        self.open.set()

    def close(self) -> None:
        self._closed = True
        self.cut()
        self.server.close()


def es_count(es, index: str) -> int:
    """Documents searchable in ``index``: 0 until the index exists.

    An index exists a moment before its primary shard has started, and a count in
    between fails with 503; so wait for the shard, then refresh and count.
    """
    if not es.indices.exists(index=index):
        return 0
    wait_until_searchable(es, index)
    es.indices.refresh(index=index)
    return es.count(index=index)["count"]


def wait_for(predicate, timeout: float, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def dumps(obj) -> bytes:
    return orjson.dumps(obj)
