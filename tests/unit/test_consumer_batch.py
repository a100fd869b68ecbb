"""The consumer's pure batch path: records in, each sink's share out (no Kafka, no sinks)."""

from __future__ import annotations

import copy
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import msgspec
import numpy as np
import orjson
import pytest

from bp_core.consumer.batch import EMPTY_MESSAGE, route_records
from bp_core.consumer.documents import AnomalyDocument, ArchiveRecord, SourcePosition
from bp_core.scoring import score_readings
from bp_core.fhir.build import observation_bytes
from bp_core.fhir.parse import parse_common_form, parse_payload, parse_payload_generic
from bp_core.model.serving import ServedModel
from bp_core.rules import Thresholds
from bp_core.sinks.archive import encode_lines
from bp_core.sinks.elasticsearch import bulk_body
from bp_core.sinks.es_template import ANOMALY_FIELDS

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fhir"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
EFFECTIVE = datetime(2026, 3, 1, 8, 30, tzinfo=timezone.utc)


class Record(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def observation(i: int, systolic: int, diastolic: int) -> bytes:
    return observation_bytes(observation_id=f"obs-{i}", patient_id=f"pat-{i % 3}", effective=EFFECTIVE,
                             systolic_mm_hg=systolic, diastolic_mm_hg=diastolic)


def records(*values: bytes | None, partition: int = 0) -> list[Record]:
    return [Record("blood-pressure", partition, offset, b"k", value) for offset, value in enumerate(values)]


def fixed_model(*probabilities: float) -> ServedModel:
    return ServedModel(name="bp-anomaly-classifier", version="4",
                       predict_proba=lambda features: np.asarray(probabilities[:len(features)]))


def as_es_sees_it(document) -> dict:
    return orjson.loads(msgspec.json.encode(document))


def test_anomaly_document_fields_are_the_index_templates():
    fields = set(as_es_sees_it(AnomalyDocument(EFFECTIVE, "o", "p", 150.0, 95.0, "hypertension_stage_2", (), True,
                                               False, None, None, None, ("rules",), NOW, "final",
                                               SourcePosition("t", 0, 1))))
    assert fields == set(ANOMALY_FIELDS)
    assert set(msgspec.structs.fields(SourcePosition)[i].encode_name for i in range(3)) == set(
        ANOMALY_FIELDS["source"]["properties"])


def test_mixed_batch_lands_in_the_right_share():
    batch = records(observation(0, 118, 76), observation(1, 165, 100), None, b"{not json",
                    observation(4, 85, 55), observation(5, 122, 78))
    outcome = route_records(batch, Thresholds(), None, 0.5, NOW)
    assert (outcome.messages, outcome.readings, outcome.anomalies, outcome.normal_count) == (6, 4, 2, 2)
    assert outcome.anomaly_ids == ["obs-1", "obs-4"]
    assert [record.offset for record in outcome.anomaly_records] == [1, 4]
    assert [(record.offset, reason) for record, reason in outcome.rejects][0] == (2, EMPTY_MESSAGE)
    assert outcome.rejects[1][0].offset == 3 and outcome.rejects[1][1].startswith("not JSON")
    assert outcome.layers == {"rules": 2}
    assert [position for position, _ in outcome.normals[0]] == [(0, 0), (5, 0)]


def test_anomaly_document_as_indexed():
    [document] = route_records(records(observation(1, 185, 125)), Thresholds(), None, 0.5, NOW).anomaly_documents
    assert as_es_sees_it(document) == {
        "@timestamp": "2026-03-01T08:30:00Z", "observation_id": "obs-1", "patient_id": "pat-1",
        "systolic": 185.0, "diastolic": 125.0, "category": "hypertensive_crisis",
        "anomaly_types": ["systolic_high", "diastolic_high"], "rule_anomaly": True, "model_anomaly": False,
        "model_probability": None, "model_name": None, "model_version": None, "detected_by": ["rules"],
        "ingested_at": "2026-03-01T12:00:00Z", "status": "final",
        "source": {"topic": "blood-pressure", "partition": 0, "offset": 0},
    }


def test_archive_record_as_written():
    outcome = route_records(records(observation(7, 118, 76), partition=2), Thresholds(), fixed_model(0.1), 0.5, NOW)
    [(position, record)] = outcome.normals[2]
    assert position == (0, 0)
    assert isinstance(record, ArchiveRecord)
    assert orjson.loads(encode_lines([record])) == {
        "observation_id": "obs-7", "patient_id": "pat-1", "effective": "2026-03-01T08:30:00Z",
        "systolic": 118.0, "diastolic": 76.0, "category": "normal", "model_probability": 0.1,
        "model_name": "bp-anomaly-classifier", "model_version": "4", "archived_at": "2026-03-01T12:00:00Z",
        "kafka": {"partition": 2, "offset": 0, "entry": 0},
    }


def test_model_and_rules_layers():
    batch = records(observation(0, 135, 85), observation(1, 182, 110), observation(2, 95, 58), observation(3, 120, 78))
    outcome = route_records(batch, Thresholds(), fixed_model(0.83, 0.97, 0.42, 0.05), 0.5, NOW)
    assert [list(d.detected_by) for d in outcome.anomaly_documents] == [["model"], ["rules", "model"], ["rules"]]
    assert outcome.layers == {"model": 1, "rules+model": 1, "rules": 1}
    assert [d.model_version for d in outcome.anomaly_documents] == ["4"] * 3
    assert [record.kafka.offset for _, record in outcome.normals[0]] == [3]


def test_bundle_entries_keep_their_index_and_a_bad_one_sends_the_message_to_the_dlq():
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": orjson.loads(observation(0, 118, 76))},
        {"resource": {"resourceType": "Patient", "id": "pat-0"}},
        {"resource": {**orjson.loads(observation(1, 165, 100)), "status": "cancelled"}},
        {"resource": orjson.loads(observation(2, 170, 100))},
    ]}
    outcome = route_records(records(orjson.dumps(bundle)), Thresholds(), None, 0.5, NOW)
    assert [position for position, _ in outcome.normals[0]] == [(0, 0)]
    assert outcome.anomaly_ids == ["obs-2"]
    [(record, reason)] = outcome.rejects
    assert reason == "obs-1: status is 'cancelled': not a usable result"


def test_bulk_body_pairs_each_document_with_its_id():
    outcome = route_records(records(observation(1, 165, 100), observation(2, 85, 55)), Thresholds(), None, 0.5, NOW)
    lines = bulk_body(outcome.anomaly_ids, outcome.anomaly_documents).splitlines()
    assert [orjson.loads(line) for line in lines[::2]] == [{"index": {"_id": "obs-1"}}, {"index": {"_id": "obs-2"}}]
    assert [orjson.loads(line)["observation_id"] for line in lines[1::2]] == ["obs-1", "obs-2"]


def test_scored_batch_columns():
    readings = [parse_payload(observation(i, s, d))[0] for i, (s, d) in enumerate([(118, 76), (165, 100)])]
    scored = score_readings(readings, Thresholds())
    assert len(scored) == 2
    assert scored.rule_anomaly == [False, True] and scored.model_anomaly == [False, False]
    assert scored.categories[0] == "normal"
    assert scored.anomaly_types == [(), ("systolic_high", "diastolic_high")]
    assert scored.layer_counts() == {"rules": 1}
    assert score_readings([], Thresholds(), fixed_model()).layer_counts() == {}


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.json")), ids=lambda p: p.name)
def test_fast_path_agrees_with_the_full_validator_on_published_examples(path):
    payload = path.read_bytes()
    common = parse_common_form(payload)
    assert common is None or parse_payload_generic(payload) == [common]


def test_fast_path_takes_the_common_form_and_leaves_the_rest():
    assert parse_common_form(observation(1, 165, 100)) == parse_payload_generic(observation(1, 165, 100))[0]
    kpa = (FIXTURES / "observation-kpa.json").read_bytes()
    assert parse_common_form(kpa) is None and parse_payload(kpa) == parse_payload_generic(kpa)
    no_id = orjson.loads(observation(1, 165, 100))
    del no_id["id"]
    assert parse_common_form(orjson.dumps(no_id)) is None
    assert parse_payload(orjson.dumps(no_id))[0].observation_id.startswith("sha1-")


def test_fast_path_any_component_order_and_other_codings():
    base = orjson.loads(observation(1, 165, 100))
    swapped = dict(base, component=base["component"][::-1])  # diastolic first, as Synthea writes it
    second_systolic = copy.deepcopy(base["component"][0])
    second_systolic["valueQuantity"]["value"] = 100
    twice = dict(base, component=[base["component"][0], second_systolic])  # two systolic components
    extra_coding = copy.deepcopy(base)  # a SNOMED coding beside LOINC, as in the HL7 example
    extra_coding["component"][0]["code"]["coding"].append({"system": "http://snomed.info/sct", "code": "271649006"})
    twice_diastolic = dict(base, component=[base["component"][1]] * 2)  # no systolic
    three = dict(base, component=base["component"] + [base["component"][1]])  # two diastolic
    for resource, fast in ((swapped, True), (twice, False), (extra_coding, True), (twice_diastolic, False),
                           (three, False)):
        payload = orjson.dumps(resource)
        common = parse_common_form(payload)
        assert (common is not None) == fast
        assert parse_payload(payload) == parse_payload_generic(payload)
        if fast:
            assert parse_payload_generic(payload) == [common]
            assert (common.systolic_mm_hg, common.diastolic_mm_hg) == (165.0, 100.0)
    hl7 = (FIXTURES / "hl7-r4-observation-example-bloodpressure.json").read_bytes()  # LOINC, SNOMED, acme codes
    assert parse_common_form(hl7) == parse_payload_generic(hl7)[0]


def test_fast_path_checks_utf8_in_the_fields_it_skips():
    payload = observation(1, 165, 100).replace(b'"Blood pressure panel', b'"Blood \xff pressure panel')
    for form in (payload, bytearray(payload)):
        assert parse_common_form(form) is None
    assert parse_payload(payload)[0].reason.startswith("not UTF-8")
    assert parse_common_form(memoryview(observation(1, 165, 100))) is None  # left to the full validator
    assert parse_payload(memoryview(observation(1, 165, 100)))[0].observation_id == "obs-1"
