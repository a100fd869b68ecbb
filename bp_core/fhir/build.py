"""Building FHIR R4 resources: the blood-pressure Observation and its Patient.

``build_observation`` returns a plain dict conforming to the FHIR vital-signs
blood-pressure profile (``http://hl7.org/fhir/StructureDefinition/bp``);
``observation_bytes`` returns the same resource as compact JSON bytes, built from a
pre-serialised template so the producer can make hundreds of thousands per second.
The measuring device, when known, is named as
``"device": {"reference": "Device/<device id>", "display": "<device model>"}``: the
model name is the fleet's identity (drift is segmented by it).
All are pure: no I/O, no clock, no randomness.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import orjson

from bp_core.fhir import codes

if TYPE_CHECKING:  # pragma: no cover - typing only, avoids importing numpy/Faker here
    from bp_core.simulation.cohort import SimulatedPatient

PATIENT_IDENTIFIER_SYSTEM = "urn:bp-monitor:patient"

_CATEGORY = [{
    "coding": [{"system": codes.OBSERVATION_CATEGORY, "code": codes.VITAL_SIGNS, "display": "Vital Signs"}],
    "text": "Vital Signs",
}]
_PANEL_CODE = {
    "coding": [{"system": codes.LOINC, "code": codes.BP_PANEL,
                "display": "Blood pressure panel with all children optional"}],
    "text": "Blood pressure",
}
_SYSTOLIC_CODE = {"coding": [{"system": codes.LOINC, "code": codes.SYSTOLIC, "display": "Systolic blood pressure"}]}
_DIASTOLIC_CODE = {"coding": [{"system": codes.LOINC, "code": codes.DIASTOLIC, "display": "Diastolic blood pressure"}]}


def _quantity(value_mm_hg: int) -> dict:
    return {"value": value_mm_hg, "unit": "mmHg", "system": codes.UCUM, "code": codes.MM_HG}


def format_effective(effective: datetime) -> str:
    """ISO-8601 with an explicit UTC offset, as FHIR ``dateTime`` requires with a time.

    Raises:
        ValueError: ``effective`` is naive (its instant would be ambiguous).
    """
    if effective.tzinfo is None or effective.utcoffset() is None:
        raise ValueError("effective must be timezone-aware")
    return effective.isoformat()


def device_reference(device_id: str, device_model: str | None) -> dict:
    """The Observation's ``device``: a reference to the Device, displayed as its model."""
    reference = {"reference": f"Device/{device_id}"}
    if device_model:
        reference["display"] = device_model
    return reference


def build_observation(*, observation_id: str, patient_id: str, effective: datetime,
                      systolic_mm_hg: int, diastolic_mm_hg: int, status: str = "final",
                      device_id: str | None = None, device_model: str | None = None) -> dict:
    """A FHIR R4 blood-pressure Observation (vital-signs BP profile) as a dict.

    Pressures are whole mmHg: they are written as JSON integers. With ``device_id``
    (and its ``device_model``), the Observation names the device that measured it.

    Raises:
        ValueError: ``effective`` is naive.
    """
    resource = {
        "resourceType": "Observation",
        "id": observation_id,
        "meta": {"profile": [codes.VITAL_SIGNS_BP_PROFILE]},
        "status": status,
        "category": _CATEGORY,
        "code": _PANEL_CODE,
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": format_effective(effective),
    }
    if device_id is not None:
        resource["device"] = device_reference(device_id, device_model)
    resource["component"] = [
        {"code": _SYSTOLIC_CODE, "valueQuantity": _quantity(int(systolic_mm_hg))},
        {"code": _DIASTOLIC_CODE, "valueQuantity": _quantity(int(diastolic_mm_hg))},
    ]
    return resource


def _template() -> tuple[bytes, ...]:
    """Split the serialised Observation around its variable parts (computed once).

    Placeholders are distinctive strings, so splitting on them cannot hit constant text.
    """
    marks = ("@@ID@@", "@@STATUS@@", "@@PATIENT@@", "@@EFFECTIVE@@")
    resource = build_observation(observation_id=marks[0], patient_id="P", effective=datetime.now().astimezone(),
                                 systolic_mm_hg=0, diastolic_mm_hg=0, status=marks[1])
    resource["subject"]["reference"] = marks[2]
    resource["effectiveDateTime"] = marks[3]
    resource["component"][0]["valueQuantity"]["value"] = "@@SYS@@"
    resource["component"][1]["valueQuantity"]["value"] = "@@DIA@@"
    text = orjson.dumps(resource)
    parts = []
    for mark in (b'"@@ID@@"', b'"@@STATUS@@"', b'"@@PATIENT@@"', b'"@@EFFECTIVE@@"', b'"@@SYS@@"', b'"@@DIA@@"'):
        head, text = text.split(mark)
        parts.append(head)
    parts.append(text)
    return tuple(parts)


_T_ID, _T_STATUS, _T_SUBJECT, _T_EFFECTIVE, _T_SYS, _T_DIA, _T_END = _template()
_FINAL = orjson.dumps("final")


def device_fragment(device_id: str | None, device_model: str | None) -> bytes:
    """The ``,"device":{...}`` member ``observation_bytes`` inserts (b"" without a device).

    The producer computes it once per patient and passes it as ``device``.
    """
    if device_id is None:
        return b""
    return b',"device":' + orjson.dumps(device_reference(device_id, device_model))


def observation_bytes(*, observation_id: str, patient_id: str, effective: datetime | str,
                      systolic_mm_hg: int, diastolic_mm_hg: int, status: str = "final",
                      device_id: str | None = None, device_model: str | None = None,
                      device: bytes | None = None) -> bytes:
    """The Observation of ``build_observation`` as compact UTF-8 JSON bytes (fast path).

    ``effective`` may be given pre-formatted (an ISO-8601 string with offset), which is
    how the producer avoids formatting datetimes one by one; likewise ``device``, a
    ``device_fragment``, instead of ``device_id`` and ``device_model``. The result parses
    to the same resource as ``orjson.dumps(build_observation(...))``; ids are JSON-escaped.

    Raises:
        ValueError: ``effective`` is a naive datetime.
    """
    effective_text = effective if isinstance(effective, str) else format_effective(effective)
    if device is None:
        device = device_fragment(device_id, device_model)
    return b"".join((
        _T_ID, orjson.dumps(observation_id),
        _T_STATUS, _FINAL if status == "final" else orjson.dumps(status),
        _T_SUBJECT, orjson.dumps(f"Patient/{patient_id}"),
        _T_EFFECTIVE, orjson.dumps(effective_text),
        device,
        _T_SYS, b"%d" % systolic_mm_hg,
        _T_DIA, b"%d" % diastolic_mm_hg,
        _T_END,
    ))


def build_patient(patient: SimulatedPatient) -> dict:
    """A FHIR R4 Patient for a simulated patient: id, identifier, name, gender, birthDate.

    It carries a (Faker) identity: it goes to the patients topic, never to logs.
    """
    given, _, family = patient.name.rpartition(" ")
    return {
        "resourceType": "Patient",
        "id": patient.patient_id,
        "identifier": [{"system": PATIENT_IDENTIFIER_SYSTEM, "value": patient.patient_id}],
        "name": [{"use": "official", "family": family, "given": given.split() if given else []}],
        "gender": "male" if patient.sex == "male" else "female",
        "birthDate": patient.birth_date.isoformat(),
    }


def patient_bytes(patient: SimulatedPatient) -> bytes:
    """``build_patient`` as compact UTF-8 JSON bytes (the patients topic's value)."""
    return orjson.dumps(build_patient(patient))
