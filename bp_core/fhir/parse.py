"""Parsing FHIR R4 blood-pressure Observations into ``Reading`` objects.

Two paths, one behaviour: ``parse_common_form`` decodes the common form (one Observation
with an id, ``effectiveDateTime``, a ``Patient/<id>`` subject, values in ``mm[Hg]``, an
optional ``Device/<id>``) straight into typed structs; anything else goes through
``parse_payload_generic``, the full validator over plain dicts, which gives every reject
its one-line reason. The fast path only answers what the full one would (the fuzz suite
checks it). What is accepted, converted and rejected: docs/internals.md#fhir-input.
"""

from __future__ import annotations

import hashlib
import math
from datetime import datetime, timezone
from typing import Annotated, Literal

import msgspec
import orjson

from bp_core.errors import InvalidObservation
from bp_core.fhir.codes import (BP_PANEL, DIASTOLIC, ENTERED_IN_ERROR, KPA, LOINC, MM_HG, MM_HG_PER_KPA, SYSTOLIC,
                                UCUM)
from bp_core.reading import Reading, Rejection

__all__ = ["parse_payload", "parse_common_form", "parse_payload_generic", "parse_resource", "observation_id_of"]

ACCEPTED_STATUSES = frozenset({"final", "amended", "corrected", "preliminary", "unknown"})
RETRACTING_STATUS = ENTERED_IN_ERROR
REJECTED_STATUSES = frozenset({"registered", "cancelled"})

MAX_SYSTOLIC_MM_HG = 300.0
MAX_DIASTOLIC_MM_HG = 200.0

_MM_HG_TEXTS = frozenset({"mmHg", MM_HG})
_UTC = timezone.utc
_NO_CONCEPT: dict = {}
_NUMBER_TYPES = (int, float)  # checked with type(), not isinstance(): bool is an int
_NAN = float("nan")


def parse_payload(payload: bytes | str) -> list[Reading | Rejection]:
    """Parse one Kafka message or file content into readings and rejections.

    Accepts a single Observation, a Bundle of any type (each ``entry.resource`` that is
    an Observation is parsed, other resources such as Patient are ignored), or NDJSON
    (one resource per line, blank lines ignored).

    Returns:
        At least one item, in document order; never raises. A payload that is not
        UTF-8, not JSON, not an object, or a Bundle without any Observation gives one
        ``Rejection`` saying why.
    """
    reading = parse_common_form(payload)
    if reading is not None:
        return [reading]
    return parse_payload_generic(payload)


def parse_payload_generic(payload: bytes | str) -> list[Reading | Rejection]:
    """``parse_payload`` without the fast path: the full validator, for every form."""
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        return _parse_undecodable(payload, exc)
    return _parse_document(document)


def parse_resource(resource: dict, full_url: object = None) -> Reading:
    """Validate one FHIR BP Observation (a dict) and extract its reading.

    ``full_url`` is the Bundle entry's ``fullUrl``, if any: kept as ``Reading.full_url``
    when it is the Observation's absolute URL (see the module docstring).

    Raises:
        InvalidObservation: the resource is not a usable BP Observation; ``reason`` says
            why in one sentence fragment and ``observation_id`` is set when known.
    """
    if type(resource) is not dict:
        raise InvalidObservation(f"not a FHIR resource: JSON {_json_type(resource)} (expected an object)")
    observation_id = observation_id_of(resource)
    try:
        return _extract(resource, observation_id, full_url)
    except InvalidObservation:
        raise
    except RecursionError as exc:
        raise InvalidObservation("malformed Observation: nested too deeply", observation_id) from exc
    except (AttributeError, TypeError, KeyError, IndexError) as exc:
        # An element of the wrong JSON type (e.g. a string where FHIR has an object):
        # cheaper to convert here than to type-check every level on the hot path.
        raise InvalidObservation(f"malformed Observation: an element has the wrong JSON type ({exc})",
                                 observation_id) from exc


def observation_id_of(resource: dict) -> str:
    """The resource's ``id``, or ``sha1-<hex>`` of its canonical JSON when it has none.

    Raises:
        InvalidObservation: the resource has no id and cannot be serialised.
    """
    resource_id = resource.get("id")
    if type(resource_id) is str and resource_id:
        return resource_id
    try:
        canonical = orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as exc:
        raise InvalidObservation(f"resource is not JSON-serialisable ({exc})") from exc
    return "sha1-" + hashlib.sha1(canonical).hexdigest()


# --------------------------------------------------------------------------- the common form


# Every field the common form needs is required, with its JSON type (and, where only one
# value is possible, that value): anything else fails to decode, in C, and goes to the
# full validator.


class _Coding(msgspec.Struct, gc=False):
    system: str | None = None
    code: str | None = None


class _Concept(msgspec.Struct, gc=False):
    coding: list[_Coding]


class _Quantity(msgspec.Struct, gc=False):
    value: float  # a JSON number; integers become floats, as the full validator's ``float(value)``
    system: Literal[UCUM]
    code: Literal[MM_HG]


class _Component(msgspec.Struct, gc=False):
    code: _Concept
    valueQuantity: _Quantity | None = None


class _Subject(msgspec.Struct, gc=False):
    reference: str


class _Device(msgspec.Struct, gc=False):
    reference: str
    display: str | None = None


class _CommonObservation(msgspec.Struct, gc=False):
    """The fields of an Observation the common form needs; all others are skipped."""

    resourceType: Literal["Observation"]
    id: Annotated[str, msgspec.Meta(min_length=1)]
    status: Literal[tuple(sorted(ACCEPTED_STATUSES | {RETRACTING_STATUS}))]
    code: _Concept
    subject: _Subject
    effectiveDateTime: str
    component: list[_Component]
    device: _Device | None = None


_decode_common = msgspec.json.Decoder(_CommonObservation).decode


def parse_common_form(payload: bytes | str) -> Reading | None:
    """The reading of a valid common-form Observation, or None for anything else.

    None is not a verdict: the payload may still be valid (a Bundle, kPa values, no id)
    or invalid; ``parse_payload_generic`` decides and says why. A ``Reading`` returned
    here is exactly the one ``parse_payload_generic`` returns for the same payload.
    """
    if not isinstance(payload, (bytes, bytearray, str)):
        return None  # a memoryview, say: the full validator takes it
    try:
        if type(payload) is not str and not payload.isascii():
            # msgspec does not check the UTF-8 of the values it skips; orjson rejects
            # the whole document for one bad byte, and so must this path.
            payload.decode("utf-8")
        resource = _decode_common(payload)
    except (msgspec.DecodeError, UnicodeError, RecursionError):  # ValidationError is a DecodeError
        return None
    for coding in resource.code.coding:
        if coding.code == BP_PANEL and coding.system == LOINC:
            break
    else:
        return None
    systolic = diastolic = None
    for component in resource.component:
        for coding in component.code.coding:
            if coding.system == LOINC:
                if coding.code == SYSTOLIC:
                    if systolic is not None:
                        return None
                    systolic = component
                    break
                if coding.code == DIASTOLIC:
                    if diastolic is not None:
                        return None
                    diastolic = component
                    break
    if systolic is None or diastolic is None:
        return None
    systolic, diastolic = systolic.valueQuantity, diastolic.valueQuantity
    if systolic is None or diastolic is None:
        return None
    systolic, diastolic = systolic.value, diastolic.value
    if not 0 < diastolic < systolic <= MAX_SYSTOLIC_MM_HG or diastolic > MAX_DIASTOLIC_MM_HG:
        return None
    reference = resource.subject.reference
    if not reference.startswith("Patient/"):
        return None
    patient_id = reference[8:]
    if not patient_id or "/" in patient_id:
        return None
    effective = _parse_fhir_datetime(resource.effectiveDateTime)
    if effective is None:
        return None
    device = resource.device
    if device is None:
        return Reading(resource.id, patient_id, effective, systolic, diastolic, resource.status)
    reference = device.reference
    if not reference.startswith("Device/"):
        return None  # another form of reference: the full validator decides
    device_id = reference[7:]
    if not device_id or "/" in device_id:
        return None
    return Reading(resource.id, patient_id, effective, systolic, diastolic, resource.status,
                   device_id, device.display or None)


# --------------------------------------------------------------------------- documents


def _parse_undecodable(payload: bytes | str, exc: orjson.JSONDecodeError) -> list[Reading | Rejection]:
    """The whole payload is not one JSON value: empty, not UTF-8, NDJSON, or garbage."""
    if isinstance(payload, (bytes, bytearray, memoryview)):
        try:
            text = bytes(payload).decode("utf-8")
        except UnicodeDecodeError as err:
            return [Rejection(f"not UTF-8: {err.reason} at byte {err.start}")]
    else:
        text = payload
    if text.startswith("\ufeff"):  # a byte-order mark, as some Windows tools write
        text = text[1:]
        try:
            return _parse_document(orjson.loads(text))
        except orjson.JSONDecodeError:
            pass  # not one JSON document: maybe NDJSON, handled below
    if not text.strip():
        return [Rejection("empty message")]
    # Only "\n" ends an NDJSON line: str.splitlines() would also split on U+2028 etc.,
    # which JSON strings may contain unescaped.
    lines = [(number, line) for number, line in enumerate(text.split("\n"), 1) if line.strip()]
    # NDJSON only when it starts like NDJSON: otherwise a text file or a broken
    # pretty-printed document would give one reject per line instead of one.
    if len(lines) < 2 or not _is_json_object(lines[0][1]):
        return [Rejection(f"not JSON: {exc}")]
    results: list[Reading | Rejection] = []
    for number, line in lines:
        try:
            document = orjson.loads(line)
        except orjson.JSONDecodeError as line_exc:
            results.append(Rejection(f"line {number}: not JSON: {line_exc}"))
            continue
        results.extend(_parse_document(document))
    return results


def _is_json_object(line: str) -> bool:
    try:
        return type(orjson.loads(line)) is dict
    except orjson.JSONDecodeError:
        return False


def _parse_document(document: object) -> list[Reading | Rejection]:
    """One decoded JSON value: an Observation, a Bundle, or a reject."""
    if type(document) is not dict:
        return [Rejection(f"not a FHIR resource: JSON {_json_type(document)} (expected an object)")]
    resource_type = document.get("resourceType")
    if resource_type == "Bundle":
        return _parse_bundle(document)
    return [_parse_one(document)]


def _parse_one(resource: dict, full_url: object = None) -> Reading | Rejection:
    try:
        return parse_resource(resource, full_url)
    except InvalidObservation as exc:
        return Rejection(exc.reason, exc.observation_id)


def _parse_bundle(bundle: dict) -> list[Reading | Rejection]:
    """Every Observation among the Bundle's entries; other resources are ignored."""
    entries = bundle.get("entry") or []
    bundle_id = bundle.get("id") if type(bundle.get("id")) is str else None
    if type(entries) is not list:
        return [Rejection(f"malformed Bundle: entry is a JSON {_json_type(entries)}, not an array", bundle_id)]
    results: list[Reading | Rejection] = []
    for entry in entries:
        resource = entry.get("resource") if type(entry) is dict else None
        if type(resource) is dict and resource.get("resourceType") == "Observation":
            results.append(_parse_one(resource, entry.get("fullUrl")))
    if not results:
        return [Rejection(f"Bundle holds no Observation ({len(entries)} entries)", bundle_id)]
    return results


# --------------------------------------------------------------------------- one Observation


def _extract(resource: dict, observation_id: str, full_url: object) -> Reading:
    resource_type = resource.get("resourceType")
    if resource_type != "Observation":
        if resource_type is None:
            raise InvalidObservation("not a FHIR resource: no resourceType", observation_id)
        raise InvalidObservation(f"not an Observation: resourceType is {_show(resource_type)}", observation_id)
    if not _has_coding(resource.get("code"), BP_PANEL):
        raise InvalidObservation(f"not a blood-pressure panel: code has no LOINC {BP_PANEL}", observation_id)
    status = resource.get("status")
    if status not in ACCEPTED_STATUSES:
        if status == RETRACTING_STATUS:
            return _extract_retraction(resource, observation_id, full_url)
        raise InvalidObservation(_status_reason(status), observation_id)

    systolic, diastolic = _values_mm_hg(resource, observation_id)
    device_id, device_model = _device(resource.get("device"))
    return Reading(
        observation_id=observation_id,
        patient_id=_patient_id(resource.get("subject"), observation_id),
        effective=_effective(resource, observation_id),
        systolic_mm_hg=systolic,
        diastolic_mm_hg=diastolic,
        status=status,
        device_id=device_id,
        device_model=device_model,
        full_url=_observation_url(full_url, observation_id),
    )


def _extract_retraction(resource: dict, observation_id: str, full_url: object) -> Reading:
    """An ``entered-in-error`` Observation: only its identity must be usable."""
    if type(resource.get("id")) is not str or not resource["id"]:
        raise InvalidObservation(f"{RETRACTING_STATUS} without an id: no earlier reading to retract", observation_id)
    patient_id = _patient_id(resource.get("subject"), observation_id)
    try:
        systolic, diastolic = _values_mm_hg(resource, observation_id)
    except (InvalidObservation, AttributeError, TypeError, KeyError, IndexError):
        systolic = diastolic = _NAN
    try:
        effective = _effective(resource, observation_id)
    except (InvalidObservation, AttributeError, TypeError):
        effective = None
    device_id, device_model = _device(resource.get("device"))
    return Reading(observation_id, patient_id, effective, systolic, diastolic, RETRACTING_STATUS,
                   device_id, device_model, _observation_url(full_url, observation_id))


def _values_mm_hg(resource: dict, observation_id: str) -> tuple[float, float]:
    systolic_component, diastolic_component = _find_components(resource.get("component"), observation_id)
    systolic = _value_mm_hg(systolic_component, "systolic", observation_id)
    diastolic = _value_mm_hg(diastolic_component, "diastolic", observation_id)
    _check_plausible(systolic, diastolic, observation_id)
    return systolic, diastolic


def _device(device: object) -> tuple[str | None, str | None]:
    """(device id, device model) of the ``device`` reference; (None, None) for any other shape."""
    if type(device) is not dict:
        return None, None
    reference = device.get("reference")
    found = _device_id(reference) if type(reference) is str else None
    if found is None and reference is None:
        identifier = device.get("identifier")
        value = identifier.get("value") if type(identifier) is dict else None
        found = value if type(value) is str and value else None
    display = device.get("display")
    return found, display if type(display) is str and display else None


def _device_id(reference: str) -> str | None:
    """``Device/7``, ``https://host/fhir/Device/7[/_history/2]``, ``urn:uuid:7`` -> ``7``; else None."""
    if reference.startswith("Device/"):
        device_id = reference[7:]
        if device_id and "/" not in device_id:  # the common case, without splitting
            return device_id
    if reference.startswith("urn:uuid:") or reference.startswith("urn:oid:"):
        return reference[reference.index(":", 4) + 1:] or None
    parts = reference.split("?", 1)[0].split("/")
    if "_history" in parts:
        parts = parts[:parts.index("_history")]
    if len(parts) >= 2 and parts[-2] == "Device" and parts[-1]:
        return parts[-1]
    return None


def _observation_url(full_url: object, observation_id: str) -> str | None:
    """The Bundle entry's ``fullUrl`` when it is this Observation's absolute URL, else None."""
    if type(full_url) is not str or not (full_url.startswith("https://") or full_url.startswith("http://")):
        return None
    url = full_url.split("/_history/", 1)[0]
    return url if url.endswith("/Observation/" + observation_id) else None


def _status_reason(status: object) -> str:
    if status is None:
        return "missing status"
    if status in REJECTED_STATUSES:
        return f"status is {_show(status)}: not a usable result"
    return f"unknown status {_show(status)}"


def _has_coding(concept: dict | None, code: str) -> bool:
    """True when the CodeableConcept has a LOINC coding with this code."""
    if not concept:
        return False
    for coding in concept.get("coding") or ():
        if coding.get("code") == code and coding.get("system") == LOINC:
            return True
    return False


def _find_components(components: list | None, observation_id: str) -> tuple[dict, dict]:
    """The systolic and diastolic components, found by LOINC code in any order."""
    if not components:
        raise InvalidObservation("missing systolic and diastolic: Observation has no component", observation_id)
    systolic = diastolic = None
    for component in components:
        for coding in (component.get("code") or _NO_CONCEPT).get("coding") or ():
            code = coding.get("code")
            if code == SYSTOLIC and coding.get("system") == LOINC:
                if systolic is not None:
                    raise InvalidObservation("more than one systolic component", observation_id)
                systolic = component
                break
            if code == DIASTOLIC and coding.get("system") == LOINC:
                if diastolic is not None:
                    raise InvalidObservation("more than one diastolic component", observation_id)
                diastolic = component
                break
    if systolic is None:
        raise InvalidObservation(f"missing systolic: no component with LOINC {SYSTOLIC}", observation_id)
    if diastolic is None:
        raise InvalidObservation(f"missing diastolic: no component with LOINC {DIASTOLIC}", observation_id)
    return systolic, diastolic


def _value_mm_hg(component: dict, name: str, observation_id: str) -> float:
    """The component's value in mmHg (kPa converted), or a reject saying why not."""
    quantity = component.get("valueQuantity")
    if quantity is None:
        absent = component.get("dataAbsentReason")
        if absent is not None:
            raise InvalidObservation(f"missing {name} (dataAbsentReason: {_concept_text(absent)})", observation_id)
        raise InvalidObservation(f"missing {name}: component has no valueQuantity", observation_id)
    value = quantity.get("value")
    if type(value) not in _NUMBER_TYPES:
        raise InvalidObservation(f"{name} value is not a number: {_show(value)}", observation_id)
    if type(value) is float and not math.isfinite(value):
        raise InvalidObservation(f"{name} value is not a finite number: {_show(value)}", observation_id)
    unit = _unit(quantity)
    if unit == MM_HG:
        return float(value)
    if unit == KPA:
        return round(value * MM_HG_PER_KPA, 1)
    raise InvalidObservation(f"{name} unit must be {MM_HG} or {KPA}, got {_show(unit)}", observation_id)


def _unit(quantity: dict) -> str | None:
    """The quantity's UCUM unit: the code when the system is UCUM (or absent), else the text."""
    code = quantity.get("code")
    if code is not None and quantity.get("system", UCUM) == UCUM:
        return code
    text = quantity.get("unit")
    if text in _MM_HG_TEXTS:
        return MM_HG
    return code if code is not None else text


def _concept_text(concept: dict) -> str:
    """A CodeableConcept in a few words: its first coding's code, or its text."""
    for coding in concept.get("coding") or ():
        if coding.get("code"):
            return _show(coding["code"]) if type(coding["code"]) is not str else coding["code"]
    text = concept.get("text")
    return text if type(text) is str and text else "unspecified"


def _check_plausible(systolic: float, diastolic: float, observation_id: str) -> None:
    if systolic <= 0 or diastolic <= 0:
        raise InvalidObservation(f"impossible reading {_fmt(systolic)}/{_fmt(diastolic)} mmHg: "
                                 "values must be positive", observation_id)
    if systolic > MAX_SYSTOLIC_MM_HG:
        raise InvalidObservation(f"impossible systolic {_fmt(systolic)} mmHg "
                                 f"(above {_fmt(MAX_SYSTOLIC_MM_HG)})", observation_id)
    if diastolic > MAX_DIASTOLIC_MM_HG:
        raise InvalidObservation(f"impossible diastolic {_fmt(diastolic)} mmHg "
                                 f"(above {_fmt(MAX_DIASTOLIC_MM_HG)})", observation_id)
    if diastolic >= systolic:
        raise InvalidObservation(f"impossible reading {_fmt(systolic)}/{_fmt(diastolic)} mmHg: "
                                 "diastolic not below systolic", observation_id)


def _fmt(value: float) -> str:
    return f"{value:g}"


def _patient_id(subject: dict | None, observation_id: str) -> str:
    """The Patient id of the subject reference (see the module docstring for the forms)."""
    if not subject:
        raise InvalidObservation("missing subject: no patient reference", observation_id)
    reference = subject.get("reference")
    if reference is None:
        identifier = subject.get("identifier")
        value = identifier.get("value") if identifier else None
        if type(value) is str and value:
            return value
        raise InvalidObservation("missing subject: reference has neither reference nor identifier.value",
                                 observation_id)
    if type(reference) is not str:
        raise InvalidObservation(f"subject reference is not a string: {_show(reference)}", observation_id)
    if reference.startswith("Patient/"):
        patient_id = reference[8:]
        if patient_id and "/" not in patient_id:  # the common case, without splitting
            return patient_id
    if reference.startswith("urn:uuid:") or reference.startswith("urn:oid:"):
        patient_id = reference[reference.index(":", 4) + 1:]
        if patient_id:
            kind = subject.get("type")
            if kind is not None and kind != "Patient":
                raise InvalidObservation(f"subject is not a Patient: type {_show(kind)}", observation_id)
            return patient_id
        raise InvalidObservation(f"subject reference has no id: {_show(reference)}", observation_id)
    return _patient_id_from_url(reference, observation_id)


def _patient_id_from_url(reference: str, observation_id: str) -> str:
    """``[base/]Patient/123[/_history/4]`` -> ``123``."""
    parts = reference.split("?", 1)[0].split("/")
    if "_history" in parts:
        parts = parts[:parts.index("_history")]
    if len(parts) >= 2 and parts[-1]:
        if parts[-2] == "Patient":
            return parts[-1]
        if parts[-2][:1].isupper():
            raise InvalidObservation(f"subject is not a Patient: {_show(reference)}", observation_id)
    raise InvalidObservation(f"subject reference is not a Patient reference: {_show(reference)}", observation_id)


def _effective(resource: dict, observation_id: str) -> datetime:
    """The effective time, timezone-aware (see the module docstring for the sources)."""
    text = resource.get("effectiveDateTime")
    source = "effectiveDateTime"
    if text is None:
        text = resource.get("effectiveInstant")
        source = "effectiveInstant"
    if text is None:
        period = resource.get("effectivePeriod")
        if period:
            text = period.get("start")
            source = "effectivePeriod.start"
            if text is None:
                text = period.get("end")
                source = "effectivePeriod.end"
    if text is None:
        raise InvalidObservation("missing effective time: no effectiveDateTime, effectiveInstant "
                                 "or effectivePeriod", observation_id)
    moment = _parse_fhir_datetime(text)
    if moment is None:
        raise InvalidObservation(f"{source} is not a FHIR dateTime: {_show(text)}", observation_id)
    return moment


def _parse_fhir_datetime(text: object) -> datetime | None:
    """A FHIR ``dateTime``/``instant`` as an aware datetime, or None when it is not one.

    Partial dates mean midnight UTC on the first day; a time without an offset is UTC.
    Only the FHIR shapes (``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD``, ``YYYY-MM-DDThh:mm...``)
    pass: ``fromisoformat`` alone would also take ISO week dates and basic formats.
    """
    if type(text) is not str:
        return None
    length = len(text)
    try:
        if length >= 10 and text[4] == "-" and text[7] == "-" and (length == 10 or text[10] == "T"):
            moment = datetime.fromisoformat(text)
        elif length == 7 and text[4] == "-" and text[:4].isdigit() and text[5:].isdigit():
            moment = datetime(int(text[:4]), int(text[5:]), 1)
        elif length == 4 and text.isdigit():
            moment = datetime(int(text), 1, 1)
        else:
            return None
    except ValueError:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=_UTC)
    return moment


def _show(value: object) -> str:
    """A value quoted for a reject reason: scalars as repr (cut at 80 characters), containers
    by their JSON type — never ``repr`` of an arbitrarily deep structure."""
    if isinstance(value, (dict, list)):
        return f"a JSON {_json_type(value)}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _json_type(value: object) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if value is None:
        return "null"
    return type(value).__name__
