"""Mutation fuzzing of the parser and of the consumer's pure batch path.

Seeds: the real published examples in ``tests/fixtures/fhir`` and outputs of
``bp_core.fhir.build``. ``tests.fuzz.mutations.Mutator`` mutates them deterministically
(seeded), and every payload goes (i) to ``parse_payload``, whose fast path
(``parse_common_form``) must agree with the full validator whenever it answers, and
(ii) through the pure part of ``ConsumerService`` batch handling: ``BatchRouter.route``
(rules alone and with a model), then the sinks' own encoders (the Elasticsearch bulk
body with its ``_id``s, the archive's JSON lines) and every DLQ reason. Nothing may
raise; every document must serialise. The number of payloads is reported in the
pytest output.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import orjson
import pytest

from bp_core.consumer.batch import BatchRouter
from bp_core.fhir.build import build_observation, observation_bytes
from bp_core.fhir.ids import MAX_KEY_BYTES, reading_key
from bp_core.fhir.parse import parse_common_form, parse_payload, parse_payload_generic
from bp_core.model.serving import ServedModel
from bp_core.reading import Reading, Rejection
from bp_core.rules import Thresholds
from bp_core.sinks.archive import encode_lines
from bp_core.sinks.elasticsearch import bulk_body, document_id
from tests.fuzz.mutations import Mutator

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fhir"
PARSE_PAYLOADS = 80_000
BATCH_PAYLOADS = 30_000
BATCH_SIZE = 500
_COUNTS: dict[str, int] = {}


def seed_documents() -> list[object]:
    seeds: list[object] = []
    for path in sorted(FIXTURES.iterdir()):
        if path.suffix == ".json":
            seeds.append(orjson.loads(path.read_bytes()))
        elif path.suffix == ".ndjson":
            lines = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
            seeds.extend(lines)
            seeds.append({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in lines]})
    start = datetime(2026, 3, 1, 8, 30, tzinfo=timezone.utc)
    for i, (systolic, diastolic) in enumerate([(118, 76), (165, 100), (85, 55), (185, 125), (135, 85)]):
        effective = start + timedelta(hours=i)
        seeds.append(build_observation(observation_id=f"built-{i}", patient_id=f"pat-{i}", effective=effective,
                                       systolic_mm_hg=systolic, diastolic_mm_hg=diastolic))
        fast = orjson.loads(observation_bytes(observation_id=f"fast-{i}", patient_id=f"pat-{i}",
                                              effective=effective, systolic_mm_hg=systolic, diastolic_mm_hg=diastolic))
        seeds.append(fast)
        # as the simulator sends it: with its device; and a retraction of it
        seeds.append({**fast, "id": f"dev-{i}",
                      "device": {"reference": f"Device/cuff-{i}", "display": "Omron HEM-7361T"}})
        seeds.append({**fast, "status": "entered-in-error"})
    seeds.append({"resourceType": "Patient", "id": "pat-0", "name": [{"family": "Doe", "given": ["Jo"]}]})
    assert len(seeds) >= 10
    return seeds


def check_results(payload: bytes, results) -> None:
    assert results, payload[:200]
    for result in results:
        if isinstance(result, Rejection):
            assert type(result.reason) is str and result.reason.strip(), (payload[:200], result)
            result.reason.encode("utf-8", "replace")  # what the DLQ header does
        else:
            assert isinstance(result, Reading), (payload[:200], result)
            assert type(result.observation_id) is str and result.observation_id
            assert type(result.patient_id) is str and result.patient_id
            assert result.device_id is None or type(result.device_id) is str and result.device_id
            assert result.device_model is None or type(result.device_model) is str and result.device_model
            assert result.full_url is None or result.full_url.startswith(("http://", "https://"))
            assert 0 < len(reading_key(result).encode()) <= MAX_KEY_BYTES
            if result.retracts:  # only its identity must be usable
                assert result.effective is None or result.effective.tzinfo is not None
                values = (result.systolic_mm_hg, result.diastolic_mm_hg)
                assert all(map(math.isnan, values)) or 0 < values[1] < values[0] <= 300
                continue
            assert result.effective.tzinfo is not None
            assert math.isfinite(result.systolic_mm_hg) and math.isfinite(result.diastolic_mm_hg)
            assert 0 < result.diastolic_mm_hg < result.systolic_mm_hg <= 300


def record_crash(crashes: dict, exc: BaseException, payload: bytes) -> None:
    """Group crashes by exception type and innermost bp_core frame; keep the shortest input."""
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "bp_core" in f.filename]
    where = f"{frames[-1].filename.split('bp_core/')[-1]}:{frames[-1].lineno}" if frames else "?"
    signature = f"{type(exc).__name__} at {where}"
    if signature not in crashes or len(payload) < len(crashes[signature]):
        crashes[signature] = payload


def format_crashes(crashes: dict) -> str:
    return "fuzzing found crashes (see tests/fuzz/test_regressions.py):\n" + "\n".join(
        f"  {signature}: {len(payload)} bytes, starts {payload[:160]!r}" for signature, payload in crashes.items())


def report(record_property, name: str, count: int, elapsed: float) -> None:
    _COUNTS[name] = count
    record_property(name, count)


def test_mutated_payloads_never_crash_the_parser(record_property, capsys):
    mutator = Mutator(seed_documents(), seed=20260301)
    started = time.perf_counter()
    readings = rejections = fast = 0
    crashes: dict[str, bytes] = {}
    disagreements: list[tuple[bytes, object, object]] = []
    for payload in mutator.payloads(PARSE_PAYLOADS):
        try:
            results = parse_payload(payload)
            common = parse_common_form(payload)
            if common is not None:
                fast += 1
                full = parse_payload_generic(payload)
                if full != [common] and len(disagreements) < 5:
                    disagreements.append((payload[:300], common, full))
        except Exception as exc:  # a finding: keep going, report each kind once (shortest input)
            record_crash(crashes, exc, payload)
            continue
        check_results(payload, results)
        for result in results:
            if isinstance(result, Reading):
                readings += 1
            else:
                rejections += 1
    elapsed = time.perf_counter() - started
    report(record_property, "parse_payloads", PARSE_PAYLOADS, elapsed)
    with capsys.disabled():
        print(f"\n[fuzz] parser: {PARSE_PAYLOADS} mutated payloads in {elapsed:.1f}s "
              f"({readings} readings, {fast} of them by the fast path, {rejections} rejections, "
              f"{len(crashes)} crash kinds); running total {sum(_COUNTS.values())}")
    assert not crashes, format_crashes(crashes)
    assert not disagreements, disagreements
    assert readings > 1000 and rejections > 1000  # the mutations are neither all fatal nor all harmless
    assert 1000 < fast < readings  # both paths are exercised


def _fuzz_model() -> ServedModel:
    def predict_proba(features: np.ndarray) -> np.ndarray:
        # Deterministic, in [0, 1], depends on the features (exercises the model path).
        return np.clip(np.abs(np.sin(features.sum(axis=1))), 0.0, 1.0)
    return ServedModel(name="fuzz-model", version="7", predict_proba=predict_proba)


@dataclass(frozen=True)
class _Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def process_batch(payloads: list[bytes], thresholds: Thresholds, model) -> dict:
    """The pure part of ``ConsumerService`` batch handling, without Kafka or sinks."""
    records = [_Record("fuzz", offset % 3, offset, None, payload) for offset, payload in enumerate(payloads)]
    outcome = BatchRouter(thresholds, 0.5, alerts_topic="alerts").route(records, model, datetime.now(timezone.utc))
    assert outcome.messages == len(payloads)
    assert outcome.anomalies + outcome.normal_count + len(outcome.corrections) - sum(
        c.routed is not None for c in outcome.corrections) == outcome.readings
    for _record, reason in outcome.rejects:
        assert reason.strip()
        reason.encode("utf-8", "replace")  # what the DLQ header does
    ids = [document_id(key) for key in outcome.anomaly_keys]
    assert all(0 < len(_id.encode()) <= 512 for _id in ids)
    assert all(document.detected_by for document in outcome.anomaly_documents)
    body = bulk_body(ids, outcome.anomaly_documents).splitlines()
    assert len(body) == 2 * outcome.anomalies
    for document, line in zip(outcome.anomaly_documents, body[1::2]):
        assert orjson.loads(line)["observation_id"] == document.observation_id
    assert sum(m.resource_type == "RiskAssessment" for m in outcome.alerts) == outcome.anomalies
    for partition, lines in outcome.normals.items():
        encoded = encode_lines([record for _, record in lines])
        assert encoded.count(b"\n") == len(lines)  # one JSON Lines record each, whatever the strings hold
        for (offset, entry), line in zip([position for position, _ in lines], encoded.splitlines()):
            assert orjson.loads(line)["kafka"] == {"partition": partition, "offset": offset, "entry": entry}
    return {"anomalies": outcome.anomalies, "normals": outcome.normal_count, "dlq": len(outcome.rejects)}


@pytest.mark.parametrize("with_model", [False, True], ids=["rules-only", "with-model"])
def test_mutated_batches_route_and_serialise(with_model, record_property, capsys):
    mutator = Mutator(seed_documents(), seed=7 + with_model)
    thresholds = Thresholds()
    model = _fuzz_model() if with_model else None
    started = time.perf_counter()
    totals = {"anomalies": 0, "normals": 0, "dlq": 0}
    crashes: dict[str, bytes] = {}
    payloads = list(mutator.payloads(BATCH_PAYLOADS // 2))
    for begin in range(0, len(payloads), BATCH_SIZE):
        batch = payloads[begin:begin + BATCH_SIZE]
        try:
            counts = process_batch(batch, thresholds, model)
        except Exception:  # a finding: narrow it down to the payload(s), then go on without them
            survivors = []
            for payload in batch:
                try:
                    process_batch([payload], thresholds, model)
                    survivors.append(payload)
                except Exception as single:
                    record_crash(crashes, single, payload)
            counts = process_batch(survivors, thresholds, model)
        for key in totals:
            totals[key] += counts[key]
    elapsed = time.perf_counter() - started
    report(record_property, f"batch_payloads_{'model' if with_model else 'rules'}", len(payloads), elapsed)
    with capsys.disabled():
        print(f"\n[fuzz] batch path ({'with model' if with_model else 'rules only'}): {len(payloads)} mutated "
              f"payloads in {elapsed:.1f}s -> {totals}, {len(crashes)} crash kinds; "
              f"running total {sum(_COUNTS.values())}")
    assert not crashes, format_crashes(crashes)
    assert totals["anomalies"] and totals["normals"] and totals["dlq"]
