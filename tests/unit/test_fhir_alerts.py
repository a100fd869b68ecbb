"""FHIR resources out: every builder's output validates as FHIR R4 (fhir.resources' R4B models),
ids are deterministic, and no two patients' alerts share an id."""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.flag import Flag
from fhir.resources.R4B.riskassessment import RiskAssessment

from bp_core.fhir import codes
from bp_core.fhir.alerts import (FhirMessage, model_assessor, qualitative_risk, risk_assessment,
                                 risk_assessment_id, risk_assessment_retraction, rules_assessor,
                                 sustained_hypertension_flag, flag_id)
from bp_core.fhir.ids import digest_id, is_fhir_id, reading_key
from bp_core.fhir.parse import parse_payload
from bp_core.reading import Reading
from bp_core.rules import Thresholds, anomaly_types, category, is_rule_anomaly

FHIR_DIR = Path(__file__).parent.parent / "fixtures" / "fhir"
DOC = Path(__file__).parents[2] / "docs" / "fhir-output.md"
UTC = timezone.utc
EFFECTIVE = datetime(2026, 3, 1, 8, 30, tzinfo=UTC)
MODEL = model_assessor("bp-anomaly-classifier", "7")
RULES = rules_assessor(Thresholds())


def reading(systolic: float = 165.0, diastolic: float = 100.0, *, patient_id: str = "pat-1",
            observation_id: str = "obs-1", **changes) -> Reading:
    return Reading(observation_id, patient_id, changes.pop("effective", EFFECTIVE), systolic, diastolic, **changes)


def assess(r: Reading, assessor=MODEL, probability: float | None = 0.91, model_anomaly: bool | None = None,
           extra_types: tuple[str, ...] = ()) -> FhirMessage:
    """The RiskAssessment the consumer would build for ``r`` (rules from bp_core.rules)."""
    rule_hit = is_rule_anomaly(r.systolic_mm_hg, r.diastolic_mm_hg) or bool(extra_types)
    if model_anomaly is None:
        model_anomaly = assessor.is_model and probability is not None and probability >= 0.5
    return risk_assessment(r, category=category(r.systolic_mm_hg, r.diastolic_mm_hg),
                           anomaly_types=(*anomaly_types(r.systolic_mm_hg, r.diastolic_mm_hg), *extra_types),
                           rule_anomaly=rule_hit, model_anomaly=model_anomaly,
                           probability=probability if assessor.is_model else None, assessor=assessor)


def validated(message: FhirMessage, model) -> dict:
    """The resource, after fhir.resources validated it; its id and type match the message's."""
    model.model_validate_json(message.value)
    resource = orjson.loads(message.value)
    assert resource["resourceType"] == message.resource_type == model.__name__
    assert resource["id"] == message.id and is_fhir_id(message.id)
    return resource


# --------------------------------------------------------------------------- RiskAssessment


def test_risk_assessment_of_a_crisis_flagged_by_rules_and_model():
    r = reading(190.0, 125.0, device_id="cuff-1", device_model="Omron HEM-7361T")
    message = assess(r, probability=0.973156)
    resource = validated(message, RiskAssessment)
    assert message.key == b"pat-1"
    assert message.id == risk_assessment_id(reading_key(r), MODEL) == \
        digest_id("ra", MODEL.device_id, "Patient/pat-1/Observation/obs-1")
    assert resource["status"] == "final"
    assert resource["subject"] == {"reference": "Patient/pat-1"}
    assert resource["occurrenceDateTime"] == "2026-03-01T08:30:00+00:00"
    assert resource["basis"] == [{"reference": "Observation/obs-1"}]
    assert resource["performer"]["reference"] == "Device/bp-anomaly-classifier.7"
    assert resource["method"]["coding"] == [{"system": codes.DETECTION_METHOD_SYSTEM, "code": "rules+model"}]
    assert "bp-anomaly-classifier version 7" in resource["method"]["text"]
    assert resource["code"]["coding"][0] == {"system": codes.SNOMED, "code": "225338004", "display": "Risk assessment"}
    overall, *types = resource["prediction"]
    assert overall["outcome"]["coding"][0]["code"] == "anomaly"
    assert overall["probabilityDecimal"] == 0.9732
    assert overall["qualitativeRisk"]["coding"] == [
        {"system": codes.RISK_PROBABILITY, "code": "high", "display": "High likelihood"}]
    assert overall["rationale"] == "190/125 mmHg, AHA category hypertensive crisis"
    assert [p["outcome"]["coding"][0]["code"] for p in types] == ["systolic_high", "diastolic_high"]
    assert all(p["outcome"]["coding"][0]["system"] == codes.ANOMALY_TYPE_SYSTEM for p in types)


def test_rules_only_risk_assessment_has_no_probability_and_names_the_rules():
    message = assess(reading(150.0, 85.0), assessor=RULES)
    resource = validated(message, RiskAssessment)
    overall = resource["prediction"][0]
    assert "probabilityDecimal" not in overall
    assert overall["qualitativeRisk"]["coding"][0]["code"] == "moderate"
    assert resource["method"]["coding"][0]["code"] == "rules"
    assert resource["performer"]["reference"] == f"Device/{RULES.device_id}"
    assert [p["outcome"]["coding"][0]["code"] for p in resource["prediction"][1:]] == ["systolic_high"]


def test_model_only_anomaly_has_the_reading_level_outcome_alone():
    resource = validated(assess(reading(128.0, 84.0), probability=0.62), RiskAssessment)
    assert [p["outcome"]["coding"][0]["code"] for p in resource["prediction"]] == ["anomaly"]
    assert resource["method"]["coding"][0]["code"] == "model"
    assert resource["prediction"][0]["qualitativeRisk"]["coding"][0]["code"] == "moderate"


def test_rules_flag_a_reading_the_model_scored_low():
    resource = validated(assess(reading(95.0, 55.0), probability=0.12), RiskAssessment)
    assert resource["method"]["coding"][0]["code"] == "rules"
    assert "also scored" in resource["method"]["text"]
    assert resource["prediction"][0]["probabilityDecimal"] == 0.12


def test_context_anomaly_types_are_outcomes_too():
    resource = validated(assess(reading(132.0, 84.0), probability=0.3, extra_types=("rise_from_baseline",)),
                         RiskAssessment)
    [_, rise] = resource["prediction"]
    assert rise["outcome"]["coding"][0] == {"system": codes.ANOMALY_TYPE_SYSTEM, "code": "rise_from_baseline",
                                            "display": "Rise from the patient's baseline"}


def test_an_anomaly_type_without_a_display_still_validates():
    resource = validated(assess(reading(), extra_types=("new_kind",)), RiskAssessment)
    assert resource["prediction"][-1]["outcome"] == {
        "coding": [{"system": codes.ANOMALY_TYPE_SYSTEM, "code": "new_kind"}], "text": "new_kind"}


@pytest.mark.parametrize("category_name, rule_anomaly, model_anomaly, expected", [
    ("hypertensive_crisis", True, False, "high"),
    ("hypertensive_crisis", True, True, "high"),
    ("hypertension_stage_2", True, True, "high"),
    ("hypertension_stage_2", True, False, "moderate"),
    ("hypotension", True, False, "moderate"),
    ("elevated", False, True, "moderate"),
])
def test_qualitative_risk(category_name, rule_anomaly, model_anomaly, expected):
    assert qualitative_risk(category_name, rule_anomaly, model_anomaly) == expected


def test_kpa_readings_validate():
    [r] = parse_payload((FHIR_DIR / "observation-kpa.json").read_bytes())
    resource = validated(assess(r, probability=0.7), RiskAssessment)
    assert resource["prediction"][0]["rationale"].startswith(f"{r.systolic_mm_hg:g}/{r.diastolic_mm_hg:g} mmHg")


def test_a_bundle_entry_is_the_basis_by_its_full_url():
    results = parse_payload((FHIR_DIR / "bundle-searchset.json").read_bytes())
    for r in results:
        resource = validated(assess(r, assessor=RULES) if is_rule_anomaly(r.systolic_mm_hg, r.diastolic_mm_hg)
                             else assess(r, probability=0.8), RiskAssessment)
        assert resource["basis"] == [{"reference": f"http://example.org/fhir/Observation/{r.observation_id}"}]


def test_long_and_unusual_ids_give_valid_references():
    r = reading(observation_id="o" * 300, patient_id="MRN 0042/7")
    message = assess(r)
    resource = validated(message, RiskAssessment)
    assert resource["basis"] == [{"type": "Observation", "identifier": {
        "system": codes.OBSERVATION_ID_SYSTEM, "value": "o" * 300}}]
    assert resource["subject"] == {"type": "Patient", "identifier": {
        "system": "urn:bp-monitor:patient", "value": "MRN 0042/7"}}
    assert message.key == "MRN 0042/7".encode()
    assert reading_key(r).startswith("sha256-") and len(message.id) <= 64


def test_an_offset_effective_time_keeps_its_offset():
    effective = datetime(2026, 3, 1, 8, 30, 0, 250000, tzinfo=timezone(timedelta(hours=-5)))
    resource = validated(assess(reading(effective=effective)), RiskAssessment)
    assert resource["occurrenceDateTime"] == "2026-03-01T08:30:00.250000-05:00"


def test_a_replay_republishes_the_same_resource():
    r = reading()
    assert assess(r) == assess(r)
    again = parse_payload(orjson.dumps({**_observation_of(r)}))[0]
    assert assess(again).id == assess(r).id


def test_ids_differ_by_patient_and_by_model_version_but_not_by_score():
    same_observation = [reading(patient_id="pat-1"), reading(patient_id="pat-2")]
    ids = {assess(r).id for r in same_observation}
    assert len(ids) == 2
    assert assess(reading(), probability=0.6).id == assess(reading(), probability=0.99).id
    other_version = model_assessor("bp-anomaly-classifier", "8")
    assert assess(reading(), assessor=other_version).id != assess(reading()).id
    assert assess(reading(), assessor=RULES).id != assess(reading()).id


@pytest.mark.parametrize("rule_anomaly, model_anomaly, assessor", [
    (False, False, MODEL), (False, True, RULES), (True, True, RULES)])
def test_an_inconsistent_anomaly_is_refused(rule_anomaly, model_anomaly, assessor):
    with pytest.raises(ValueError, match="not a consistent anomaly"):
        risk_assessment(reading(), category="hypertension_stage_2", anomaly_types=("systolic_high",),
                        rule_anomaly=rule_anomaly, model_anomaly=model_anomaly, probability=None, assessor=assessor)


def test_a_non_finite_probability_is_left_out():
    resource = validated(assess(reading(), probability=math.nan, model_anomaly=False), RiskAssessment)
    assert "probabilityDecimal" not in resource["prediction"][0]


def test_no_patient_name_reaches_a_risk_assessment():
    bundle = orjson.loads((FHIR_DIR / "bundle-collection.json").read_bytes())
    names = [part for entry in bundle["entry"] if entry["resource"]["resourceType"] == "Patient"
             for name in entry["resource"]["name"] for part in (name.get("family"), *name.get("given", ())) if part]
    assert names
    for r in parse_payload(orjson.dumps(bundle)):
        value = assess(r, probability=0.9, model_anomaly=True).value
        assert not any(part.encode() in value for part in names)
        assert b'"name"' not in value


# --------------------------------------------------------------------------- retraction


def test_a_retraction_has_the_id_of_the_assessment_it_withdraws():
    original = assess(reading())
    [retraction] = parse_payload(orjson.dumps({**_observation_of(reading()), "status": "entered-in-error",
                                               "component": []}))
    assert retraction.retracts and math.isnan(retraction.systolic_mm_hg)
    message = risk_assessment_retraction(retraction, MODEL)
    resource = validated(message, RiskAssessment)
    assert message.id == original.id and message.key == original.key
    assert resource["status"] == "entered-in-error"
    assert resource["subject"] == {"reference": "Patient/pat-1"}
    assert resource["basis"] == [{"reference": "Observation/obs-1"}]
    assert "prediction" not in resource


def test_a_retraction_without_an_effective_time_validates():
    r = reading(math.nan, math.nan, status="entered-in-error", effective=None)
    resource = validated(risk_assessment_retraction(r, RULES), RiskAssessment)
    assert "occurrenceDateTime" not in resource


# --------------------------------------------------------------------------- Devices


def test_the_model_device_names_the_model_and_its_version():
    resource = validated(MODEL.device, Device)
    assert MODEL.device.key == b"bp-anomaly-classifier.7"
    assert resource["deviceName"] == [{"name": "bp-anomaly-classifier", "type": "model-name"}]
    assert resource["version"] == [{"value": "7"}]
    assert resource["type"]["coding"] == [{"system": codes.SNOMED, "code": "706689003",
                                           "display": "Application program software"}]
    assert model_assessor("bp-anomaly-classifier", "7") == MODEL  # deterministic


def test_a_file_model_gets_a_digest_device_id():
    assessor = model_assessor("file:model.joblib", "3f9a0c1b2d4e")
    validated(assessor.device, Device)
    assert assessor.device_id.startswith("device-")


def test_the_rules_device_lists_its_thresholds_and_versions_them():
    resource = validated(RULES.device, Device)
    values = {p["type"]["text"]: p["valueQuantity"][0]["value"] for p in resource["property"]}
    assert values == {"systolic high": 140.0, "systolic low": 90.0, "diastolic high": 90.0, "diastolic low": 60.0}
    assert all(p["valueQuantity"][0]["code"] == "mm[Hg]" for p in resource["property"])
    assert rules_assessor(Thresholds(systolic_high=140, systolic_low=90)).device == RULES.device  # 140 == 140.0
    assert rules_assessor(Thresholds(systolic_high=150.0)).device_id != RULES.device_id
    with_context = rules_assessor(Thresholds(), baseline_systolic_delta=20.0, baseline_diastolic_delta=10.0)
    assert with_context.device_id != RULES.device_id
    assert len(validated(with_context.device, Device)["property"]) == 6


# --------------------------------------------------------------------------- Flag


def test_a_sustained_hypertension_flag_goes_active_then_inactive_under_one_id():
    start, end = EFFECTIVE, EFFECTIVE + timedelta(days=9)
    active = sustained_hypertension_flag("pat-1", start=start, author=RULES)
    inactive = sustained_hypertension_flag("pat-1", start=start, end=end, author=RULES)
    active_resource, inactive_resource = validated(active, Flag), validated(inactive, Flag)
    assert active.id == inactive.id == flag_id("pat-1", start)
    assert active.key == inactive.key == b"pat-1"
    assert (active_resource["status"], inactive_resource["status"]) == ("active", "inactive")
    assert active_resource["period"] == {"start": "2026-03-01T08:30:00+00:00"}
    assert inactive_resource["period"] == {"start": "2026-03-01T08:30:00+00:00", "end": "2026-03-10T08:30:00+00:00"}
    assert active_resource["code"]["coding"][0] == {"system": codes.SNOMED, "code": "24184005",
                                                    "display": "Finding of increased blood pressure"}
    assert active_resource["category"][0]["coding"][0]["code"] == "clinical"
    assert active_resource["author"]["reference"] == f"Device/{RULES.device_id}"


def test_flag_ids_differ_by_patient_and_episode_but_not_by_time_zone():
    start = EFFECTIVE
    assert flag_id("pat-1", start) != flag_id("pat-2", start)
    assert flag_id("pat-1", start) != flag_id("pat-1", start + timedelta(days=30))
    assert flag_id("pat-1", start) == flag_id("pat-1", start.astimezone(timezone(timedelta(hours=9))))


def test_a_flag_without_author_validates():
    assert "author" not in validated(sustained_hypertension_flag("pat-1", start=EFFECTIVE), Flag)


@pytest.mark.parametrize("start, end", [
    (datetime(2026, 3, 1), None),
    (EFFECTIVE, datetime(2026, 3, 9)),
    (EFFECTIVE, EFFECTIVE - timedelta(seconds=1)),
], ids=["naive-start", "naive-end", "end-before-start"])
def test_a_flag_needs_aware_ordered_times(start, end):
    with pytest.raises(ValueError):
        sustained_hypertension_flag("pat-1", start=start, end=end)


# --------------------------------------------------------------------------- the documentation


def test_the_documented_examples_are_what_the_builders_give():
    examples = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", DOC.read_text(), re.S)]
    effective = datetime(2026, 3, 1, 7, 42, 10, tzinfo=UTC)
    r = reading(186.0, 112.0, patient_id="pat-00042", observation_id="5c1f8a0e-9d2b-4c41-8f0e-3a7d5b2c9e11",
                effective=effective)
    rules = rules_assessor(Thresholds(), baseline_systolic_delta=20.0, baseline_diastolic_delta=10.0)
    built = [
        risk_assessment(r, category="hypertensive_crisis", anomaly_types=("systolic_high", "diastolic_high"),
                        rule_anomaly=True, model_anomaly=True, probability=0.98731, assessor=MODEL),
        risk_assessment_retraction(r, MODEL),
        MODEL.device,
        rules.device,
        sustained_hypertension_flag("pat-00042", start=effective, author=rules),
    ]
    assert len(examples) == len(built)
    for example, message in zip(examples, built):
        resource = orjson.loads(message.value)
        if "property" in example:  # the doc shows some of the rules' properties
            shown, properties = example.pop("property"), resource.pop("property")
            assert all(p in properties for p in shown)
        assert example == resource, message.resource_type


# --------------------------------------------------------------------------- helpers


def _observation_of(r: Reading) -> dict:
    """The FHIR Observation a reading came from (mm[Hg], as the simulator writes it)."""
    from bp_core.fhir.build import build_observation
    return build_observation(observation_id=r.observation_id, patient_id=r.patient_id, effective=r.effective,
                             systolic_mm_hg=int(r.systolic_mm_hg), diastolic_mm_hg=int(r.diastolic_mm_hg))
