"""Parsing FHIR R4 blood-pressure Observations: published examples, real-world shapes, rejects."""

from __future__ import annotations

import copy
import hashlib
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest

from bp_core.errors import InvalidObservation
from bp_core.fhir.build import observation_bytes
from bp_core.fhir.parse import parse_common_form, parse_payload, parse_payload_generic, parse_resource
from bp_core.reading import FUTURE_TOLERANCE, Reading, Rejection, future_reason

FHIR_DIR = Path(__file__).parent.parent / "fixtures" / "fhir"
UTC = timezone.utc
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


def fixture_bytes(name: str) -> bytes:
    return (FHIR_DIR / name).read_bytes()


def component(code: str, value, unit_code="mm[Hg]", unit="mmHg") -> dict:
    return {"code": {"coding": [{"system": LOINC, "code": code}]},
            "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit_code}}


def observation(**changes) -> dict:
    """A minimal valid BP Observation (120/80, Patient/p1), with top-level changes."""
    resource = {
        "resourceType": "Observation",
        "id": "obs-1",
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "vital-signs"}]}],
        "code": {"coding": [{"system": LOINC, "code": "85354-9"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2024-05-01T10:30:00+02:00",
        "component": [component("8480-6", 120), component("8462-4", 80)],
    }
    resource.update(changes)
    return {k: v for k, v in resource.items() if v is not None}


def without(key: str) -> dict:
    resource = observation()
    del resource[key]
    return resource


def single(payload) -> Reading | Rejection:
    results = parse_payload(payload)
    assert len(results) == 1, results
    return results[0]


def reject_reason(resource: dict) -> str:
    with pytest.raises(InvalidObservation) as info:
        parse_resource(resource)
    if orjson.loads(orjson.dumps(resource)) == resource:  # not with NaN: JSON has none
        result = single(orjson.dumps(resource))
        assert isinstance(result, Rejection) and result.reason == info.value.reason
    return info.value.reason


# --------------------------------------------------------------------------- published examples


def test_hl7_example_is_accepted():
    reading = single(fixture_bytes("hl7-r4-observation-example-bloodpressure.json"))
    assert reading == Reading(observation_id="blood-pressure", patient_id="example",
                              effective=datetime(2012, 9, 17, tzinfo=UTC),
                              systolic_mm_hg=107.0, diastolic_mm_hg=60.0, status="final")


def test_hl7_dar_example_is_rejected_for_its_absent_diastolic():
    result = single(fixture_bytes("hl7-r4-observation-example-bloodpressure-dar.json"))
    assert result == Rejection("missing diastolic (dataAbsentReason: not-performed)", "blood-pressure-dar")


def test_us_core_example_is_accepted():
    reading = single(fixture_bytes("us-core-observation-blood-pressure.json"))
    assert (reading.systolic_mm_hg, reading.diastolic_mm_hg) == (109.0, 44.0)
    assert reading.patient_id == "example"
    assert reading.effective == datetime(1999, 7, 2, tzinfo=UTC)


# --------------------------------------------------------------------------- accepted shapes


def test_components_in_reverse_order():
    resource = observation(component=[component("8462-4", 70), component("8480-6", 130)])
    reading = parse_resource(resource)
    assert (reading.systolic_mm_hg, reading.diastolic_mm_hg) == (130.0, 70.0)


def test_device_coding_before_loinc_in_code_and_components():
    device = {"system": "urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680", "code": "150020"}
    systolic = component("8480-6", 125)
    systolic["code"]["coding"].insert(0, {"system": "urn:oid:1.2.840.10004", "code": "150021"})
    resource = observation(code={"coding": [device, {"system": LOINC, "code": "85354-9"}]},
                           component=[{"code": {"text": "pulse"}}, systolic, component("8462-4", 82)])
    assert parse_resource(resource).systolic_mm_hg == 125.0


@pytest.mark.parametrize("effective, expected", [
    ({"effectiveDateTime": "2024-05-01T10:30:00Z"}, datetime(2024, 5, 1, 10, 30, tzinfo=UTC)),
    ({"effectiveDateTime": "2024-05-01T10:30:00.123+02:00"},
     datetime(2024, 5, 1, 10, 30, 0, 123000, tzinfo=timezone(timedelta(hours=2)))),
    ({"effectiveDateTime": "2024-05-01"}, datetime(2024, 5, 1, tzinfo=UTC)),
    ({"effectiveDateTime": "2024-05"}, datetime(2024, 5, 1, tzinfo=UTC)),
    ({"effectiveDateTime": "2024"}, datetime(2024, 1, 1, tzinfo=UTC)),
    ({"effectiveDateTime": "2024-05-01T10:30:00"}, datetime(2024, 5, 1, 10, 30, tzinfo=UTC)),  # naive -> UTC
    ({"effectiveInstant": "2024-05-01T10:30:00.250Z"}, datetime(2024, 5, 1, 10, 30, 0, 250000, tzinfo=UTC)),
    ({"effectivePeriod": {"start": "2024-05-01T10:30:00Z", "end": "2024-05-01T10:35:00Z"}},
     datetime(2024, 5, 1, 10, 30, tzinfo=UTC)),
    ({"effectivePeriod": {"end": "2024-05-01T10:35:00Z"}}, datetime(2024, 5, 1, 10, 35, tzinfo=UTC)),
], ids=["zulu", "offset-fraction", "date", "year-month", "year", "naive", "instant", "period-start", "period-end"])
def test_effective_forms(effective, expected):
    resource = without("effectiveDateTime")
    resource.update(effective)
    effective_time = parse_resource(resource).effective
    assert effective_time == expected and effective_time.tzinfo is not None


@pytest.mark.parametrize("subject, patient_id", [
    ({"reference": "Patient/123"}, "123"),
    ({"reference": "urn:uuid:6f1c0e6a-3b8e-4c7a"}, "6f1c0e6a-3b8e-4c7a"),
    ({"reference": "urn:uuid:abc", "type": "Patient"}, "abc"),
    ({"reference": "https://fhir.example.org/r4/Patient/123"}, "123"),
    ({"reference": "Patient/123/_history/4"}, "123"),
    ({"reference": "https://fhir.example.org/Patient/123/_history/4"}, "123"),
    ({"identifier": {"system": "urn:bp-monitor:patient", "value": "p-9"}}, "p-9"),
], ids=["relative", "urn-uuid", "urn-uuid-typed", "absolute", "versioned", "absolute-versioned", "identifier"])
def test_subject_forms(subject, patient_id):
    assert parse_resource(observation(subject=subject)).patient_id == patient_id


@pytest.mark.parametrize("status", ["final", "amended", "corrected", "preliminary", "unknown"])
def test_accepted_statuses_are_kept(status):
    assert parse_resource(observation(status=status)).status == status


def test_kpa_is_converted_to_mm_hg():
    reading = single(fixture_bytes("observation-kpa.json"))
    assert reading.systolic_mm_hg == pytest.approx(16.0 * 7.50062, abs=0.05)
    assert reading.diastolic_mm_hg == pytest.approx(10.7 * 7.50062, abs=0.05)


@pytest.mark.parametrize("quantity", [
    {"value": 120, "unit": "mmHg"},                                     # no system, unit text
    {"value": 120, "unit": "mm[Hg]"},
    {"value": 120, "code": "mm[Hg]"},                                   # code without system
    {"value": 120, "unit": "mmHg", "system": "http://other.org", "code": "MMHG"},
    {"value": 120.5, "unit": "millimetre of mercury", "system": UCUM, "code": "mm[Hg]"},
], ids=["unit-text", "unit-ucum-text", "code-only", "other-system-unit-text", "decimal"])
def test_mm_hg_unit_variants(quantity):
    systolic = {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]}, "valueQuantity": quantity}
    assert parse_resource(observation(component=[systolic, component("8462-4", 80)])).systolic_mm_hg == quantity["value"]


def test_extra_fields_are_ignored():
    resource = observation(note=[{"text": "after exercise"}], bodySite={"text": "left arm"}, interpretation=[])
    assert isinstance(parse_resource(resource), Reading)


def test_missing_id_gives_a_deterministic_digest():
    resource = without("id")
    expected = "sha1-" + hashlib.sha1(orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)).hexdigest()
    reordered = dict(reversed(list(resource.items())))
    assert parse_resource(resource).observation_id == expected
    assert single(orjson.dumps(reordered)).observation_id == expected  # a replay maps to the same id


def test_str_payload_is_accepted():
    assert isinstance(single(orjson.dumps(observation()).decode()), Reading)


# --------------------------------------------------------------------------- Bundles and NDJSON


@pytest.mark.parametrize("name, ids, patients", [
    ("bundle-collection.json", ["bp-c1", "bp-c2"], ["p-100", "p-100"]),
    ("bundle-transaction.json", ["bp-t1", "bp-t2"], ["6f1c0e6a-3b8e-4c7a-9d2a-5e0f6b1c2d3e"] * 2),
    ("bundle-searchset.json", ["bp-s1", "bp-s2"], ["p-100", "p-100"]),
])
def test_bundles_yield_their_observations_and_skip_patients(name, ids, patients):
    results = parse_payload(fixture_bytes(name))
    assert all(isinstance(r, Reading) for r in results), results
    assert [r.observation_id for r in results] == ids
    assert [r.patient_id for r in results] == patients


def test_bundle_keeps_good_and_bad_entries_in_order():
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": observation(id="a")},
        {"resource": observation(id="b", status="cancelled")},
        {"request": {"method": "DELETE", "url": "Observation/z"}},
    ]}
    results = parse_payload(orjson.dumps(bundle))
    assert [type(r) for r in results] == [Reading, Rejection]
    assert results[1].observation_id == "b"


@pytest.mark.parametrize("bundle, reason", [
    ({"resourceType": "Bundle", "id": "b1", "type": "collection", "entry": [{"resource": {"resourceType": "Patient"}}]},
     "Bundle holds no Observation (1 entries)"),
    ({"resourceType": "Bundle", "id": "b1", "type": "collection"}, "Bundle holds no Observation (0 entries)"),
    ({"resourceType": "Bundle", "id": "b1", "type": "collection", "entry": {"resource": {}}},
     "malformed Bundle: entry is a JSON object, not an array"),
], ids=["patient-only", "empty", "entry-not-array"])
def test_bundle_without_observations_gives_one_rejection(bundle, reason):
    assert parse_payload(orjson.dumps(bundle)) == [Rejection(reason, "b1")]


def test_ndjson_skips_blank_lines():
    results = parse_payload(fixture_bytes("observations.ndjson"))
    assert [(r.observation_id, r.systolic_mm_hg) for r in results] == [("bp-n1", 121), ("bp-n2", 88), ("bp-n3", 160)]


def test_ndjson_bad_line_is_rejected_alone():
    payload = orjson.dumps(observation(id="a")) + b"\n{broken\n" + orjson.dumps(observation(id="c")) + b"\n"
    results = parse_payload(payload)
    assert [type(r) for r in results] == [Reading, Rejection, Reading]
    assert results[1].reason.startswith("line 2: not JSON")


# --------------------------------------------------------------------------- payload rejects


@pytest.mark.parametrize("payload, reason_start", [
    (b"", "empty message"),
    (b"  \n\n", "empty message"),
    (b"\xff\xfe{}", "not UTF-8: invalid start byte at byte 0"),
    (b'{"resourceType": "Observation", "id": "\xc3\x28"}', "not UTF-8"),
    (b"not json", "not JSON: "),
    (b'{"resourceType": "Observation",', "not JSON: "),
    (b"# title\nsome text\nmore", "not JSON: "),
    (b"[1, 2]", "not a FHIR resource: JSON array (expected an object)"),
    (b'"text"', "not a FHIR resource: JSON string (expected an object)"),
    (b"null", "not a FHIR resource: JSON null (expected an object)"),
    (b"42", "not a FHIR resource: JSON number (expected an object)"),
], ids=["empty", "blank", "bad-utf8", "bad-utf8-inside", "garbage", "truncated", "text-lines", "array",
        "string", "null", "number"])
def test_payload_rejects_never_raise(payload, reason_start):
    result = single(payload)
    assert isinstance(result, Rejection) and result.reason.startswith(reason_start), result
    assert result.observation_id is None


# --------------------------------------------------------------------------- resource rejects


def _component_with(**changes) -> dict:
    systolic = component("8480-6", 120)
    systolic.update(changes)
    return systolic


def _quantity(**changes) -> dict:
    systolic = component("8480-6", 120)
    systolic["valueQuantity"].update(changes)
    return observation(component=[systolic, component("8462-4", 80)])


def _values(systolic, diastolic) -> dict:
    return observation(component=[component("8480-6", systolic), component("8462-4", diastolic)])


@pytest.mark.parametrize("resource, reason", [
    (observation(resourceType="Patient"), "not an Observation: resourceType is 'Patient'"),
    (without("resourceType"), "not a FHIR resource: no resourceType"),
    (observation(code={"coding": [{"system": LOINC, "code": "8867-4"}]}),
     "not a blood-pressure panel: code has no LOINC 85354-9"),
    (observation(code={"coding": [{"system": "http://snomed.info/sct", "code": "85354-9"}]}),
     "not a blood-pressure panel: code has no LOINC 85354-9"),
    (without("code"), "not a blood-pressure panel: code has no LOINC 85354-9"),
    (observation(status="cancelled"), "status is 'cancelled': not a usable result"),
    (observation(status="registered"), "status is 'registered': not a usable result"),
    (observation(status="done"), "unknown status 'done'"),
    (without("status"), "missing status"),
    (without("component"), "missing systolic and diastolic: Observation has no component"),
    (observation(component=[component("8480-6", 120)]), "missing diastolic: no component with LOINC 8462-4"),
    (observation(component=[component("8462-4", 80)]), "missing systolic: no component with LOINC 8480-6"),
    (observation(component=[component("8480-6", 120), component("8480-6", 121), component("8462-4", 80)]),
     "more than one systolic component"),
    (observation(component=[_component_with(valueQuantity=None, dataAbsentReason={"text": "asked"}),
                            component("8462-4", 80)]),
     "missing systolic (dataAbsentReason: asked)"),
    (observation(component=[{"code": {"coding": [{"system": LOINC, "code": "8480-6"}]}}, component("8462-4", 80)]),
     "missing systolic: component has no valueQuantity"),
    (_quantity(value="120"), "systolic value is not a number: '120'"),
    (_quantity(value=True), "systolic value is not a number: True"),
    (_quantity(value=None), "systolic value is not a number: None"),
    (_quantity(value=float("nan")), "systolic value is not a finite number: nan"),
    (_quantity(code="cm[H2O]", unit="cmH2O"), "systolic unit must be mm[Hg] or kPa, got 'cm[H2O]'"),
    (_quantity(code=None, system=None, unit="psi"), "systolic unit must be mm[Hg] or kPa, got 'psi'"),
    (_quantity(code=None, system=None, unit=None), "systolic unit must be mm[Hg] or kPa, got None"),
    (_values(0, 80), "impossible reading 0/80 mmHg: values must be positive"),
    (_values(120, -5), "impossible reading 120/-5 mmHg: values must be positive"),
    (_values(301, 80), "impossible systolic 301 mmHg (above 300)"),
    (_values(290, 201), "impossible diastolic 201 mmHg (above 200)"),
    (_values(80, 80), "impossible reading 80/80 mmHg: diastolic not below systolic"),
    (_values(85, 95), "impossible reading 85/95 mmHg: diastolic not below systolic"),
    (without("effectiveDateTime"),
     "missing effective time: no effectiveDateTime, effectiveInstant or effectivePeriod"),
    (observation(effectiveDateTime=None, effectivePeriod={}),
     "missing effective time: no effectiveDateTime, effectiveInstant or effectivePeriod"),
    (observation(effectiveDateTime="yesterday"), "effectiveDateTime is not a FHIR dateTime: 'yesterday'"),
    (observation(effectiveDateTime="2024-13-01"), "effectiveDateTime is not a FHIR dateTime: '2024-13-01'"),
    (observation(effectiveDateTime="2024-W18"), "effectiveDateTime is not a FHIR dateTime: '2024-W18'"),
    (observation(effectiveDateTime=20240501), "effectiveDateTime is not a FHIR dateTime: 20240501"),
    (observation(effectiveDateTime=None, effectivePeriod={"start": "soon"}),
     "effectivePeriod.start is not a FHIR dateTime: 'soon'"),
    (without("subject"), "missing subject: no patient reference"),
    (observation(subject={"display": "Amy"}),
     "missing subject: reference has neither reference nor identifier.value"),
    (observation(subject={"reference": "Group/7"}), "subject is not a Patient: 'Group/7'"),
    (observation(subject={"reference": "urn:uuid:abc", "type": "Device"}), "subject is not a Patient: type 'Device'"),
    (observation(subject={"reference": "#contained-1"}),
     "subject reference is not a Patient reference: '#contained-1'"),
    (observation(subject={"reference": 7}), "subject reference is not a string: 7"),
    (observation(component="120/80"),
     "malformed Observation: an element has the wrong JSON type ('str' object has no attribute 'get')"),
], ids=lambda value: value if isinstance(value, str) and len(value) < 60 else None)
def test_resource_rejects_name_the_reason(resource, reason):
    assert reject_reason(resource) == reason


def test_rejects_carry_the_observation_id():
    with pytest.raises(InvalidObservation) as info:
        parse_resource(observation(id="obs-9", status="cancelled"))
    assert info.value.observation_id == "obs-9"


def test_parse_resource_rejects_a_non_dict():
    with pytest.raises(InvalidObservation, match="expected an object"):
        parse_resource([observation()])  # type: ignore[arg-type]


@pytest.mark.parametrize("mutate", [
    lambda r: r.update(code="85354-9"),
    lambda r: r.update(code={"coding": "85354-9"}),
    lambda r: r["component"][0].update(code="8480-6"),
    lambda r: r["component"][0].update(valueQuantity=[120]),
    lambda r: r.update(subject="Patient/1"),
    lambda r: r.update(effectivePeriod="2024", effectiveDateTime=None),
    lambda r: r["component"].append(None),
], ids=["code-str", "coding-str", "component-code-str", "quantity-list", "subject-str", "period-str", "component-null"])
def test_wrong_json_types_are_rejects_not_crashes(mutate):
    resource = copy.deepcopy(observation())
    mutate(resource)
    resource = {k: v for k, v in resource.items() if v is not None}
    assert isinstance(single(orjson.dumps(resource)), Rejection)


def test_byte_order_mark_is_tolerated():
    assert isinstance(single(b"\xef\xbb\xbf" + orjson.dumps(observation())), Reading)


def test_ndjson_with_crlf_and_line_separator_inside_a_string():
    first = orjson.dumps(observation(id="a", note=[{"text": "left\u2028arm"}]))
    results = parse_payload(first + b"\r\n" + orjson.dumps(observation(id="b")) + b"\r\n")
    assert [r.observation_id for r in results] == ["a", "b"]
    assert all(isinstance(r, Reading) for r in results)


# --------------------------------------------------------------------------- corrections


def test_entered_in_error_is_a_retraction_with_its_values_when_they_are_valid():
    reading = single(orjson.dumps(observation(status="entered-in-error")))
    assert reading == Reading("obs-1", "p1", datetime(2024, 5, 1, 8, 30, tzinfo=UTC), 120.0, 80.0, "entered-in-error")
    assert reading.retracts and not reading.amends


@pytest.mark.parametrize("change", [
    lambda r: r.pop("component"),
    lambda r: r.update(component=[component("8480-6", 120)]),
    lambda r: r["component"][0]["valueQuantity"].update(value="120"),
    lambda r: r["component"][0]["valueQuantity"].update(code="cm[H2O]"),
    lambda r: r.update(component=[component("8480-6", 80), component("8462-4", 120)]),
    lambda r: r.update(component="120/80"),
], ids=["no-components", "no-diastolic", "string-value", "bad-unit", "impossible", "wrong-type"])
def test_a_retraction_needs_no_usable_values(change):
    resource = observation(status="entered-in-error")
    change(resource)
    reading = single(orjson.dumps(resource))
    assert isinstance(reading, Reading) and reading.retracts
    assert (reading.observation_id, reading.patient_id) == ("obs-1", "p1")
    assert math.isnan(reading.systolic_mm_hg) and math.isnan(reading.diastolic_mm_hg)


@pytest.mark.parametrize("effective", [{}, {"effectiveDateTime": "yesterday"}, {"effectivePeriod": "2024"}],
                         ids=["none", "invalid", "wrong-type"])
def test_a_retraction_needs_no_usable_effective_time(effective):
    resource = without("effectiveDateTime")
    resource.update(status="entered-in-error", **effective)
    reading = single(orjson.dumps(resource))
    assert isinstance(reading, Reading) and reading.retracts and reading.effective is None
    assert future_reason(reading, datetime(2020, 1, 1, tzinfo=UTC)) is None


@pytest.mark.parametrize("resource, reason", [
    ({**without("id"), "status": "entered-in-error"}, "entered-in-error without an id: no earlier reading to retract"),
    (observation(id="", status="entered-in-error"), "entered-in-error without an id: no earlier reading to retract"),
    (observation(status="entered-in-error", subject=None), "missing subject: no patient reference"),
    (observation(status="entered-in-error", subject={"reference": "Group/7"}), "subject is not a Patient: 'Group/7'"),
    (observation(status="entered-in-error", code={"coding": [{"system": LOINC, "code": "8867-4"}]}),
     "not a blood-pressure panel: code has no LOINC 85354-9"),
], ids=["no-id", "empty-id", "no-subject", "group-subject", "not-bp"])
def test_a_retraction_still_needs_an_id_and_a_patient(resource, reason):
    assert reject_reason(resource) == reason


@pytest.mark.parametrize("status", ["amended", "corrected"])
def test_amended_and_corrected_replace_the_earlier_reading(status):
    reading = parse_resource(observation(status=status))
    assert reading.amends and not reading.retracts and reading.status == status


def test_the_fast_path_answers_a_valid_retraction_as_the_full_validator_does():
    payload = orjson.dumps(observation(status="entered-in-error", device={"reference": "Device/d1"}))
    assert parse_common_form(payload) is not None
    assert parse_payload_generic(payload) == [parse_common_form(payload)]
    broken = observation(status="entered-in-error", component=[component("8480-6", 120)])
    assert parse_common_form(orjson.dumps(broken)) is None  # NaN values: the full validator answers


# --------------------------------------------------------------------------- device


@pytest.mark.parametrize("device, device_id, device_model", [
    ({"reference": "Device/cuff-17", "display": "Omron HEM-7361T"}, "cuff-17", "Omron HEM-7361T"),
    ({"reference": "Device/cuff-17"}, "cuff-17", None),
    ({"reference": "Device/cuff-17", "display": ""}, "cuff-17", None),
    ({"reference": "https://fhir.example.org/r4/Device/cuff-17"}, "cuff-17", None),
    ({"reference": "Device/cuff-17/_history/2"}, "cuff-17", None),
    ({"reference": "urn:uuid:0b9e6c1a-1111", "display": "A&D UA-651"}, "0b9e6c1a-1111", "A&D UA-651"),
    ({"identifier": {"system": "urn:serial", "value": "SN-4"}, "display": "cuff"}, "SN-4", "cuff"),
    ({"reference": "DeviceMetric/m1", "display": "cuff"}, None, "cuff"),
    ({"reference": "Device/"}, None, None),
    ({"reference": 7, "display": 8}, None, None),
    ({"display": "cuff"}, None, "cuff"),
    ("Device/cuff-17", None, None),
    ([{"reference": "Device/cuff-17"}], None, None),
    (None, None, None),
], ids=["relative", "no-display", "empty-display", "absolute", "versioned", "urn", "identifier", "device-metric",
        "empty-id", "wrong-types", "display-only", "string", "array", "null"])
def test_device_forms_never_reject(device, device_id, device_model):
    payload = orjson.dumps(observation(device=device) if device is not None else {**observation(), "device": None})
    reading = single(payload)
    assert isinstance(reading, Reading)
    assert (reading.device_id, reading.device_model) == (device_id, device_model)
    fast = parse_common_form(payload)
    assert fast is None or [fast] == parse_payload_generic(payload)


def test_the_simulators_device_takes_the_fast_path():
    resource = orjson.loads(observation_bytes(observation_id="o-1", patient_id="p-1",
                                              effective=datetime(2026, 3, 1, 8, 30, tzinfo=UTC),
                                              systolic_mm_hg=150, diastolic_mm_hg=95))
    resource["device"] = {"reference": "Device/cuff-0042", "display": "Omron HEM-7361T"}
    payload = orjson.dumps(resource)
    fast = parse_common_form(payload)
    assert fast is not None and (fast.device_id, fast.device_model) == ("cuff-0042", "Omron HEM-7361T")
    assert parse_payload_generic(payload) == [fast]


# --------------------------------------------------------------------------- full URLs


def test_bundle_entries_keep_their_absolute_full_url():
    results = parse_payload(fixture_bytes("bundle-collection.json"))
    assert [r.full_url for r in results] == ["http://example.org/fhir/Observation/bp-c1",
                                             "http://example.org/fhir/Observation/bp-c2"]


def test_urn_uuid_full_urls_are_local_to_the_bundle_and_not_kept():
    results = parse_payload(fixture_bytes("bundle-transaction.json"))
    assert [r.full_url for r in results] == [None, None]


@pytest.mark.parametrize("full_url, kept", [
    ("https://fhir.example.org/r4/Observation/obs-1", "https://fhir.example.org/r4/Observation/obs-1"),
    ("https://fhir.example.org/r4/Observation/obs-1/_history/3", "https://fhir.example.org/r4/Observation/obs-1"),
    ("https://fhir.example.org/r4/Observation/other", None),        # not this resource's URL
    ("https://fhir.example.org/r4/Patient/obs-1", None),
    ("Observation/obs-1", None),                                     # relative
    ("urn:uuid:0b9e6c1a-1111-4222-8333-944455556666", None),
    (17, None),
], ids=["absolute", "versioned", "other-id", "other-type", "relative", "urn", "number"])
def test_full_url_is_kept_only_when_it_is_the_observations_absolute_url(full_url, kept):
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"fullUrl": full_url, "resource": observation()}]}
    [reading] = parse_payload(orjson.dumps(bundle))
    assert reading.full_url == kept


def test_a_bundle_retraction_keeps_its_full_url():
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "https://fhir.example.org/Observation/obs-1", "resource": observation(status="entered-in-error")}]}
    [reading] = parse_payload(orjson.dumps(bundle))
    assert reading.retracts and reading.full_url == "https://fhir.example.org/Observation/obs-1"


# --------------------------------------------------------------------------- times in the future


NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _dated(effective: datetime) -> Reading:
    return Reading("o-1", "p-1", effective, 120.0, 80.0)


def test_a_reading_up_to_the_tolerance_ahead_is_accepted():
    assert FUTURE_TOLERANCE == timedelta(hours=24)
    for effective in (NOW - timedelta(days=400), NOW, NOW + timedelta(hours=23), NOW + FUTURE_TOLERANCE):
        assert future_reason(_dated(effective), NOW) is None


def test_a_reading_further_ahead_is_refused_with_its_reason():
    effective = datetime(2026, 3, 3, 9, 30, tzinfo=timezone(timedelta(hours=2)))
    assert future_reason(_dated(effective), NOW) == (
        "effective time in the future: 2026-03-03T09:30:00+02:00 is more than 24 h after it was consumed "
        "(2026-03-01T12:00:00+00:00)")
    assert future_reason(_dated(NOW + FUTURE_TOLERANCE + timedelta(microseconds=1)), NOW) is not None


def test_the_future_check_compares_instants_not_wall_clocks():
    # 00:59 the next day at UTC-12 is 12:59 UTC: 24 h 59 min ahead, though the wall clock is only 13 h ahead
    assert future_reason(_dated(datetime(2026, 3, 2, 0, 59, tzinfo=timezone(timedelta(hours=-12)))), NOW) is not None
    # 13:00 the next day at UTC+14 is 23:00 UTC today: 11 h ahead, though the wall clock is 25 h ahead
    assert future_reason(_dated(datetime(2026, 3, 2, 13, 0, tzinfo=timezone(timedelta(hours=14)))), NOW) is None


def test_the_future_check_needs_an_aware_now():
    with pytest.raises(TypeError):
        future_reason(_dated(NOW), datetime(2026, 3, 1, 12, 0))
