"""FHIR R4 resources bp-monitor publishes on the alerts topic: pure builders, no I/O, no clock.

- ``risk_assessment``: a ``RiskAssessment`` per reading routed as an anomaly, and
  ``risk_assessment_retraction`` the same id with status ``entered-in-error``;
- ``model_assessor`` / ``rules_assessor``: who assessed the readings (a model version, or
  the rules alone), with the ``Device`` that stands for it (published once per version);
- ``sustained_hypertension_flag``: a ``Flag``, active when a patient's sustained
  hypertension starts, inactive (same id) when it ends.

Each builder returns a ``FhirMessage``: the resource's id, its Kafka key and its compact
JSON. The consumer may build one per anomaly, so resources are plain dicts encoded once by
``orjson``, and every constant part is serialised once (at import, or per assessor) into an
``orjson.Fragment`` copied as it is. Ids are deterministic (``bp_core.fhir.ids``): a replay
republishes the same resources. No patient names anywhere: a ``Reading`` holds none.
docs/fhir-output.md shows each resource and explains the codes chosen.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone

import msgspec
import orjson

from bp_core.fhir import codes
from bp_core.fhir.build import PATIENT_IDENTIFIER_SYSTEM
from bp_core.fhir.ids import digest_id, device_id, is_fhir_id, reading_key
from bp_core.reading import Reading
from bp_core.rules import CATEGORIES, CRISIS, Thresholds

__all__ = ["FhirMessage", "Assessor", "model_assessor", "rules_assessor", "risk_assessment",
           "risk_assessment_retraction", "risk_assessment_id", "qualitative_risk", "sustained_hypertension_flag",
           "flag_id", "RULES_DEVICE_NAME", "MANUFACTURER"]

MANUFACTURER = "bp-monitor"
RULES_DEVICE_NAME = "bp-monitor-rules"
PROBABILITY_DIGITS = 4  # a model's probability, as published


class FhirMessage(msgspec.Struct, frozen=True, gc=False):
    """One resource for the alerts topic."""

    resource_type: str
    id: str
    key: bytes     # the Kafka key: the patient id (RiskAssessment, Flag), the Device id (Device)
    value: bytes   # the resource as compact UTF-8 JSON


# --------------------------------------------------------------------------- constant parts


def _coding(system: str, code: str, display: str | None = None) -> dict:
    return {"system": system, "code": code, "display": display} if display else {"system": system, "code": code}


def _json(value: object) -> orjson.Fragment:
    """A constant part, serialised once."""
    return orjson.Fragment(orjson.dumps(value))


_RISK_ASSESSMENT_CODE = _json({"coding": [_coding(codes.SNOMED, codes.RISK_ASSESSMENT, "Risk assessment")],
                               "text": "Blood-pressure anomaly assessment"})
_SOFTWARE_TYPE = [_coding(codes.SNOMED, codes.SOFTWARE, "Application program software")]
_QUALITATIVE_RISK = {
    "high": _json({"coding": [_coding(codes.RISK_PROBABILITY, "high", "High likelihood")]}),
    "moderate": _json({"coding": [_coding(codes.RISK_PROBABILITY, "moderate", "Moderate likelihood")]}),
}
_OUTCOMES = {code: _json({"coding": [_coding(codes.ANOMALY_TYPE_SYSTEM, code, display)], "text": display})
             for code, display in codes.ANOMALY_TYPE_DISPLAYS.items()}
_ANOMALY_OUTCOME = _OUTCOMES[codes.ANOMALY]
_FLAG_CATEGORY = _json([{"coding": [_coding(codes.FLAG_CATEGORY, "clinical", "Clinical")]}])
# 24184005 is a finding, not the disorder 38341003 (Hypertensive disorder): an automated
# average of home readings supports a diagnosis, it does not make one.
_SUSTAINED_HYPERTENSION_CODE = _json({
    "coding": [_coding(codes.SNOMED, codes.INCREASED_BLOOD_PRESSURE, "Finding of increased blood pressure"),
               _coding(codes.PATIENT_STATUS_SYSTEM, codes.SUSTAINED_HYPERTENSION, "Sustained hypertension")],
    "text": "Sustained hypertension: 7-day home blood-pressure average at or above 135/85 mmHg "
            "over at least 12 readings",
})
_MM_HG = {"unit": "mmHg", "system": codes.UCUM, "code": codes.MM_HG}
_CATEGORY_TEXTS = {category: category.replace("_", " ") for category in CATEGORIES}


# --------------------------------------------------------------------------- assessors and their Devices


@dataclass(frozen=True, slots=True)
class Assessor:
    """What assessed the readings: a model version, or the rules alone; built once per version.

    ``device`` is the FHIR Device that stands for it (the RiskAssessments' ``performer``),
    to publish once per version before its first RiskAssessment.
    """

    name: str
    version: str
    is_model: bool
    device: FhirMessage
    # Serialised parts, derived from the fields above (so left out of equality):
    _reference: orjson.Fragment = field(repr=False, compare=False)  # the Device reference
    _methods: tuple = field(repr=False, compare=False)  # RiskAssessment.method: rules, model, rules+model

    @property
    def device_id(self) -> str:
        return self.device.id


def model_assessor(name: str, version: str) -> Assessor:
    """The assessor of a served model version (rules and this model).

    Args:
        name: the registered model name (``ServedModel.name``).
        version: its version (``ServedModel.version``).
    """
    label = f"model {name} version {version}"
    methods = (
        _method("rules", f"Clinical threshold rules (also scored by {label})"),
        _method("model", label.capitalize()),
        _method("rules+model", f"Clinical threshold rules and {label}"),
    )
    device = _device(name, version, f"Blood-pressure anomaly model {name}, version {version}", properties=None)
    return Assessor(name, version, True, device, _device_reference(device.id, label), methods)


def rules_assessor(thresholds: Thresholds, *, baseline_systolic_delta: float | None = None,
                   baseline_diastolic_delta: float | None = None) -> Assessor:
    """The clinical threshold rules alone: the RiskAssessments' performer when no model is
    served, and the author of the sustained-hypertension Flags.

    Its version is a digest of the rule parameters (thresholds, and baseline deltas when
    the patient context is on), so changing one gives a new Device; the Device lists them
    as properties.
    """
    parameters = {"systolic_high": thresholds.systolic_high, "systolic_low": thresholds.systolic_low,
                  "diastolic_high": thresholds.diastolic_high, "diastolic_low": thresholds.diastolic_low,
                  "baseline_systolic_delta": baseline_systolic_delta,
                  "baseline_diastolic_delta": baseline_diastolic_delta}
    parameters = {name: float(value) for name, value in parameters.items() if value is not None}
    version = digest_id("r", *(f"{name}={value!r}" for name, value in sorted(parameters.items())))[:14]
    label = "clinical threshold rules"
    methods = (_method("rules", "Clinical threshold rules (no model served)"), None, None)
    properties = [{"type": {"text": name.replace("_", " ")}, "valueQuantity": [{"value": value, **_MM_HG}]}
                  for name, value in parameters.items()]
    device = _device(RULES_DEVICE_NAME, version, "Clinical threshold rules of bp-monitor", properties)
    return Assessor(RULES_DEVICE_NAME, version, False, device, _device_reference(device.id, label), methods)


def _method(code: str, text: str) -> orjson.Fragment:
    return _json({"coding": [_coding(codes.DETECTION_METHOD_SYSTEM, code)], "text": text})


def _device_reference(identifier: str, display: str) -> orjson.Fragment:
    return _json({"reference": f"Device/{identifier}", "display": display})


def _device(name: str, version: str, description: str, properties: list | None) -> FhirMessage:
    identifier = device_id(name, version)
    resource = {
        "resourceType": "Device",
        "id": identifier,
        "status": "active",
        "manufacturer": MANUFACTURER,
        "deviceName": [{"name": name, "type": "model-name"}],
        "type": {"coding": _SOFTWARE_TYPE, "text": description},
        "version": [{"value": version}],
    }
    if properties:
        resource["property"] = properties
    return FhirMessage("Device", identifier, identifier.encode(), orjson.dumps(resource))


# --------------------------------------------------------------------------- RiskAssessment


def qualitative_risk(category: str, rule_anomaly: bool, model_anomaly: bool) -> str:
    """The likelihood that the anomaly is real (HL7 risk-probability code), see docs/fhir-output.md.

    ``high`` ("more likely than not") for a hypertensive crisis (far beyond what
    measurement noise explains) or when the rules and the model both flag the reading;
    ``moderate`` ("a reasonable likelihood") when one layer alone does.
    """
    return "high" if category == CRISIS or (rule_anomaly and model_anomaly) else "moderate"


def risk_assessment_id(key: str, assessor: Assessor) -> str:
    """The RiskAssessment id of a reading (by its ``reading_key``) for this assessor:
    ``digest_id("ra", <assessor's Device id>, key)``."""
    device = assessor.device.id
    # digest_id's input, written out: this runs once per anomaly
    text = f"{len(device)}:{device}{len(key)}:{key}"
    return "ra-" + hashlib.sha256(text.encode()).hexdigest()[:40]


def risk_assessment(reading: Reading, *, category: str, anomaly_types: tuple[str, ...] | list[str],
                    rule_anomaly: bool, model_anomaly: bool, probability: float | None, assessor: Assessor,
                    key: str | None = None) -> FhirMessage:
    """The RiskAssessment of a reading routed as an anomaly.

    ``prediction[0]`` is the reading-level outcome (``anomaly``) with the model's
    ``probabilityDecimal`` (when a model scored the reading) and the ``qualitativeRisk``;
    one prediction follows per anomaly type (``systolic_high``, ``rise_from_baseline``...).
    ``method`` says which layer(s) flagged it, ``performer`` is the assessor's Device,
    ``basis`` the Observation (its full URL when it came with one).

    Args:
        reading: the anomalous reading (not a retraction).
        category: its AHA category (``bp_core.rules.CATEGORIES``).
        anomaly_types: the types the rules found (may be empty when the model alone flagged it).
        rule_anomaly, model_anomaly: which layers flagged it (at least one).
        probability: the model's probability, or None when no model scored it.
        assessor: ``model_assessor`` of the served model, or ``rules_assessor``.
        key: ``reading_key(reading)`` when the caller has it already.
    Returns:
        The resource, keyed by the patient id; its id is ``risk_assessment_id(key, assessor)``.
    Raises:
        ValueError: neither layer flagged the reading, or the model flagged it but the
            assessor is the rules alone.
    """
    if not (rule_anomaly or model_anomaly) or (model_anomaly and not assessor.is_model):
        raise ValueError(f"not a consistent anomaly: rule_anomaly={rule_anomaly}, model_anomaly={model_anomaly}, "
                         f"assessor {assessor.name} {assessor.version}")
    identifier = risk_assessment_id(key or reading_key(reading), assessor)
    overall = {"outcome": _ANOMALY_OUTCOME}
    if probability is not None and math.isfinite(probability):
        overall["probabilityDecimal"] = round(probability, PROBABILITY_DIGITS)
    overall["qualitativeRisk"] = _QUALITATIVE_RISK[qualitative_risk(category, rule_anomaly, model_anomaly)]
    overall["rationale"] = "%g/%g mmHg, AHA category %s" % (
        reading.systolic_mm_hg, reading.diastolic_mm_hg, _CATEGORY_TEXTS.get(category, category))
    predictions = [overall]
    for anomaly_type in anomaly_types:
        outcome = _OUTCOMES.get(anomaly_type) or {"coding": [_coding(codes.ANOMALY_TYPE_SYSTEM, anomaly_type)],
                                                  "text": anomaly_type}
        predictions.append({"outcome": outcome})
    resource = {
        "resourceType": "RiskAssessment",
        "id": identifier,
        "status": "final",
        "method": assessor._methods[rule_anomaly + 2 * model_anomaly - 1],
        "code": _RISK_ASSESSMENT_CODE,
        "subject": _patient_reference(reading.patient_id),
        "occurrenceDateTime": reading.effective,  # aware (the parser's): orjson writes RFC 3339 with its offset
        "performer": assessor._reference,
        "basis": [_observation_reference(reading)],
        "prediction": predictions,
    }
    return FhirMessage("RiskAssessment", identifier, reading.patient_id.encode(), orjson.dumps(resource))


def risk_assessment_retraction(reading: Reading, assessor: Assessor, key: str | None = None) -> FhirMessage:
    """The RiskAssessment that withdraws an earlier one: same id, status ``entered-in-error``.

    Args:
        reading: the retraction (``reading.retracts``) or the reading it withdraws: both
            have the same key and subject.
        assessor: the assessor of the RiskAssessment withdrawn (the model name and version
            stored with the anomaly, or the rules).
        key: ``reading_key(reading)`` when the caller has it already.
    """
    identifier = risk_assessment_id(key or reading_key(reading), assessor)
    resource = {
        "resourceType": "RiskAssessment",
        "id": identifier,
        "status": codes.ENTERED_IN_ERROR,
        "code": _RISK_ASSESSMENT_CODE,
        "subject": _patient_reference(reading.patient_id),
    }
    if reading.effective is not None:
        resource["occurrenceDateTime"] = reading.effective
    resource["performer"] = assessor._reference
    resource["basis"] = [_observation_reference(reading)]
    return FhirMessage("RiskAssessment", identifier, reading.patient_id.encode(), orjson.dumps(resource))


# --------------------------------------------------------------------------- Flag


def flag_id(patient_id: str, start: datetime) -> str:
    """The id of a patient's sustained-hypertension Flag for the episode starting at ``start``.

    Raises:
        ValueError: ``start`` is naive.
    """
    return digest_id("flag", patient_id, _utc(start).isoformat())


def sustained_hypertension_flag(patient_id: str, *, start: datetime, end: datetime | None = None,
                                author: Assessor | None = None) -> FhirMessage:
    """The Flag of a sustained-hypertension episode: ``active`` from ``start``, ``inactive``
    once ``end`` is given (the same id: ``flag_id(patient_id, start)``). Its ``code.text``
    states the definition of issue 24 (7-day home average >= 135/85 over >= 12 readings).

    Args:
        patient_id: the patient.
        start: the effective time of the reading that started the episode (aware).
        end: the effective time of the reading that ended it (aware), or None while it lasts.
        author: the assessor whose rules computed it, if it should be named.
    Raises:
        ValueError: ``start`` or ``end`` is naive, or ``end`` is before ``start``.
    """
    period = {"start": _datetime(start)}
    status = "active"
    if end is not None:
        if _utc(end) < _utc(start):
            raise ValueError(f"the episode ends ({end.isoformat()}) before it starts ({start.isoformat()})")
        period["end"] = _datetime(end)
        status = "inactive"
    identifier = flag_id(patient_id, start)
    resource = {
        "resourceType": "Flag",
        "id": identifier,
        "status": status,
        "category": _FLAG_CATEGORY,
        "code": _SUSTAINED_HYPERTENSION_CODE,
        "subject": _patient_reference(patient_id),
        "period": period,
    }
    if author is not None:
        resource["author"] = author._reference
    return FhirMessage("Flag", identifier, patient_id.encode(), orjson.dumps(resource))


# --------------------------------------------------------------------------- references and times


def _patient_reference(patient_id: str) -> dict:
    """``Patient/<id>`` (the id of the Patient bp-monitor publishes), or a logical reference
    by identifier when the id is not a FHIR id."""
    if is_fhir_id(patient_id):
        return {"reference": f"Patient/{patient_id}"}
    return {"type": "Patient", "identifier": {"system": PATIENT_IDENTIFIER_SYSTEM, "value": patient_id}}


def _observation_reference(reading: Reading) -> dict:
    """The Observation's full URL, ``Observation/<id>``, or a logical reference when its id
    is not a FHIR id."""
    if reading.full_url is not None:
        return {"reference": reading.full_url}
    if is_fhir_id(reading.observation_id):
        return {"reference": f"Observation/{reading.observation_id}"}
    return {"type": "Observation", "identifier": {"system": codes.OBSERVATION_ID_SYSTEM,
                                                  "value": reading.observation_id}}


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("a FHIR dateTime with a time needs a timezone: got a naive datetime")
    return moment.astimezone(timezone.utc)


def _datetime(moment: datetime) -> str:
    """A FHIR dateTime (ISO 8601 with its offset). Raises ValueError when naive."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("a FHIR dateTime with a time needs a timezone: got a naive datetime")
    return moment.isoformat()
