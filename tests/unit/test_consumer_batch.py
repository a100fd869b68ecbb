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

from bp_core.consumer.batch import EMPTY_MESSAGE, BatchRouter
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


def route(batch, model=None, *, alerts_topic=None):
    return BatchRouter(Thresholds(), 0.5, alerts_topic=alerts_topic).route(batch, model, NOW)


def key(i: int) -> str:
    """The reading key (Elasticsearch ``_id``) of ``observation(i, ...)``."""
    return f"Patient/pat-{i % 3}/Observation/obs-{i}"


NO_CONTEXT = {"baseline_systolic": None, "baseline_diastolic": None, "baseline_readings": 0,
              "home_average_systolic": None, "home_average_diastolic": None, "home_average_readings": 0,
              "arv_systolic": None}


def as_es_sees_it(document) -> dict:
    return orjson.loads(msgspec.json.encode(document))


def test_anomaly_document_fields_are_the_index_templates():
    fields = set(as_es_sees_it(AnomalyDocument(EFFECTIVE, "o", "p", 150.0, 95.0, "hypertension_stage_2", (), True,
                                               False, None, None, None, ("rules",), NOW, "final",
                                               SourcePosition("t", 0, 1), None, None, None, None, 0, None,
                                               None, 0, None)))
    assert fields == set(ANOMALY_FIELDS)
    assert set(msgspec.structs.fields(SourcePosition)[i].encode_name for i in range(3)) == set(
        ANOMALY_FIELDS["source"]["properties"])


def test_mixed_batch_lands_in_the_right_share():
    batch = records(observation(0, 118, 76), observation(1, 165, 100), None, b"{not json",
                    observation(4, 85, 55), observation(5, 122, 78))
    outcome = route(batch, None)
    assert (outcome.messages, outcome.readings, outcome.anomalies, outcome.normal_count) == (6, 4, 2, 2)
    assert outcome.anomaly_keys == [key(1), key(4)]
    assert [record.offset for record in outcome.anomaly_records] == [1, 4]
    assert [(record.offset, reason) for record, reason in outcome.rejects][0] == (2, EMPTY_MESSAGE)
    assert outcome.rejects[1][0].offset == 3 and outcome.rejects[1][1].startswith("not JSON")
    assert outcome.layers == {"rules": 2}
    assert [position for position, _ in outcome.normals[0]] == [(0, 0), (5, 0)]


def test_anomaly_document_as_indexed():
    [document] = route(records(observation(1, 185, 125)), None).anomaly_documents
    assert as_es_sees_it(document) == {
        "@timestamp": "2026-03-01T08:30:00Z", "observation_id": "obs-1", "patient_id": "pat-1",
        "systolic": 185.0, "diastolic": 125.0, "category": "hypertensive_crisis",
        "anomaly_types": ["systolic_high", "diastolic_high"], "rule_anomaly": True, "model_anomaly": False,
        "model_probability": None, "model_name": None, "model_version": None, "detected_by": ["rules"],
        "ingested_at": "2026-03-01T12:00:00Z", "status": "final",
        "source": {"topic": "blood-pressure", "partition": 0, "offset": 0}, "device_id": None, "device_model": None,
        **NO_CONTEXT,
    }


def test_archive_record_as_written():
    outcome = route(records(observation(7, 118, 76), partition=2), fixed_model(0.1))
    [(position, record)] = outcome.normals[2]
    assert position == (0, 0)
    assert isinstance(record, ArchiveRecord)
    assert orjson.loads(encode_lines([record])) == {
        "observation_id": "obs-7", "patient_id": "pat-1", "effective": "2026-03-01T08:30:00Z",
        "systolic": 118.0, "diastolic": 76.0, "category": "normal", "model_probability": 0.1,
        "model_name": "bp-anomaly-classifier", "model_version": "4", "archived_at": "2026-03-01T12:00:00Z",
        "kafka": {"partition": 2, "offset": 0, "entry": 0}, "status": "final", "device_id": None,
        "device_model": None, **NO_CONTEXT,
    }


def test_model_and_rules_layers():
    batch = records(observation(0, 135, 85), observation(1, 182, 110), observation(2, 95, 58), observation(3, 120, 78))
    outcome = route(batch, fixed_model(0.83, 0.97, 0.42, 0.05))
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
    outcome = route(records(orjson.dumps(bundle)), None)
    assert [position for position, _ in outcome.normals[0]] == [(0, 0)]
    assert outcome.anomaly_keys == [key(2)]
    [(record, reason)] = outcome.rejects
    assert reason == "obs-1: status is 'cancelled': not a usable result"


def test_bulk_body_pairs_each_document_with_its_id():
    outcome = route(records(observation(1, 165, 100), observation(2, 85, 55)), None)
    lines = bulk_body(outcome.anomaly_keys, outcome.anomaly_documents).splitlines()
    assert [orjson.loads(line) for line in lines[::2]] == [{"index": {"_id": key(1)}}, {"index": {"_id": key(2)}}]
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


def with_fields(i: int, systolic: int, diastolic: int, **fields) -> bytes:
    return orjson.dumps({**orjson.loads(observation(i, systolic, diastolic)), **fields})


def test_a_reading_dated_more_than_a_day_ahead_is_rejected_as_in_the_future():
    ahead = with_fields(1, 118, 76, effectiveDateTime="2026-03-02T12:00:01+00:00")  # NOW + 24 h + 1 s
    tomorrow = with_fields(2, 118, 76, effectiveDateTime="2026-03-02T12:00:00+00:00")  # NOW + 24 h: accepted
    outcome = route(records(ahead, tomorrow))
    [(record, reason)] = outcome.rejects
    assert record.offset == 0 and "effective time in the future" in reason
    assert outcome.normal_count == 1


def test_each_anomaly_gets_a_risk_assessment_and_the_assessor_its_device_once():
    router = BatchRouter(Thresholds(), 0.5, alerts_topic="alerts")
    model = fixed_model(0.9, 0.1)
    first = router.route(records(observation(1, 165, 100), observation(2, 118, 76)), model, NOW)
    assert [m.resource_type for m in first.alerts] == ["Device", "RiskAssessment"]
    assert first.alerts[1].key == b"pat-1"
    again = router.route(records(observation(1, 165, 100)), fixed_model(0.9), NOW)
    assert [m.resource_type for m in again.alerts] == ["RiskAssessment"]  # the Device went out already
    assert again.alerts[0].id == first.alerts[1].id, "a replay republishes the same resource"
    assert route(records(observation(1, 165, 100))).alerts == []  # no alerts topic: no alerts


def test_retractions_are_set_apart_and_amendments_noted_for_the_writer():
    retraction = with_fields(1, 165, 100, status="entered-in-error")
    amendment = with_fields(2, 118, 76, status="amended")
    outcome = route(records(retraction, amendment, observation(3, 170, 100)))
    assert outcome.anomaly_keys == [key(3)] and outcome.normal_keys == {key(2)}
    assert [(c.key, c.routed) for c in outcome.corrections] == [(key(1), None), (key(2), "normal")]


def test_documents_name_the_measuring_device():
    device = {"reference": "Device/cuff-c-000042", "display": "cuff model C"}
    outcome = route(records(with_fields(1, 165, 100, device=device), with_fields(2, 118, 76, device=device)))
    assert (outcome.anomaly_documents[0].device_id, outcome.anomaly_documents[0].device_model) == \
        ("cuff-c-000042", "cuff model C")
    [(_, line)] = outcome.normals[0]
    assert line.device_model == "cuff model C"


def patient_readings(values, *, start=datetime(2026, 2, 20, 8, 0, tzinfo=timezone.utc), every_h=12):
    """Observations of one patient (pat-0), ``every_h`` hours apart."""
    from datetime import timedelta

    return [observation_bytes(observation_id=f"h-{i}", patient_id="pat-0", effective=start + timedelta(hours=every_h * i),
                              systolic_mm_hg=s, diastolic_mm_hg=d) for i, (s, d) in enumerate(values)]


def context_with_empty_store(partition=0):
    from bp_core.consumer.state import PatientContext
    from bp_core.context import PatientStore

    context = PatientContext("changelog", reader=None)
    context.stores[partition] = PatientStore()  # assigned, nothing to restore
    return context


def test_a_rise_from_the_patients_baseline_is_a_rule_anomaly_with_its_context():
    router = BatchRouter(Thresholds(), 0.5, alerts_topic="alerts")
    outcome = router.route(records(*patient_readings([(118, 76)] * 6 + [(139, 76)])), None, NOW,
                           context_with_empty_store())
    assert outcome.normal_count == 6  # 139/76: inside the brief's limits, but 21 above the baseline
    [document] = outcome.anomaly_documents
    assert document.anomaly_types == ("rise_from_baseline",) and document.rule_anomaly
    assert (document.baseline_systolic, document.baseline_diastolic, document.baseline_readings) == (118.0, 76.0, 6)
    assert document.home_average_readings == 7 and document.arv_systolic == 3.5  # 21 mmHg over 6 steps
    [(_, first)] = outcome.normals[0][:1]
    assert as_es_sees_it(first)["baseline_systolic"] is None and first.baseline_readings == 0  # no history yet
    assert {partition for partition, _, _ in outcome.changelog} == {0}
    assert [key for _, key, _ in outcome.changelog] == [b"pat-0"]


def test_a_retraction_of_a_reading_the_state_holds_is_known():
    context = context_with_empty_store()
    router = BatchRouter(Thresholds(), 0.5)
    router.route(records(*patient_readings([(118, 76)] * 3)), None, NOW, context)
    retraction = orjson.loads(patient_readings([(118, 76)])[0])
    outcome = router.route(records(orjson.dumps({**retraction, "status": "entered-in-error"})), None, NOW, context)
    [correction] = outcome.corrections
    assert correction.held and correction.routed is None


def test_sustained_hypertension_is_flagged_when_it_starts_only():
    router = BatchRouter(Thresholds(), 0.5, alerts_topic="alerts")
    context = context_with_empty_store()
    outcome = router.route(records(*patient_readings([(142, 88)] * 14)), None, NOW, context)
    flags = [m for m in outcome.alerts if m.resource_type == "Flag"]
    assert len(flags) == 1 and [c.change for c in outcome.status_changes] == ["started"]
    assert orjson.loads(flags[0].value)["status"] == "active"
    devices = [m.id for m in outcome.alerts if m.resource_type == "Device"]
    assert devices.count(router.assessor(None).device_id) == 1  # the rules' Device, before any of its Flags
