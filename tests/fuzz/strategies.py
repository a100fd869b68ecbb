"""Hypothesis strategies: structurally varied FHIR blood-pressure Observations.

``valid_observations()`` draws (resource, expected) pairs where ``expected`` is what
``parse_payload`` must extract (id, patient, effective instant, mmHg values, status,
device); ``invalid_observations()`` draws (resource, reason fragment) pairs: a valid
resource broken in one known way, and a fragment the rejection's reason must contain;
``retractions()`` draws ``entered-in-error`` resources whose values or time may be
broken, which must still parse (NaN values, no time).
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

import orjson
from hypothesis import strategies as st

from bp_core.fhir.codes import BP_PANEL, DIASTOLIC, LOINC, MM_HG_PER_KPA, SYSTOLIC, UCUM

STATUSES = ["final", "amended", "corrected", "preliminary", "unknown", "entered-in-error"]
ids = st.from_regex(r"[A-Za-z0-9\-.]{1,64}", fullmatch=True)
extra_codings = st.lists(st.sampled_from([
    {"system": "http://snomed.info/sct", "code": "75367002", "display": "Blood pressure"},
    {"system": "urn:iso:std:iso:11073:10101", "code": "150016"},
    {"system": "http://acme.org/devices", "code": "BP-1", "userSelected": True},
    {"code": BP_PANEL},                                    # no system: must not count
]), max_size=3)
extra_fields = st.dictionaries(
    st.sampled_from(["note", "interpretation", "device", "method", "bodySite", "issued", "performer",
                     "extension", "text", "identifier", "encounter", "_status", "x-custom"]),
    st.one_of(st.text(max_size=20), st.integers(-2**63, 2**63 - 1), st.lists(st.dictionaries(st.text(max_size=5), st.text(max_size=5)),
                                                              max_size=2)),
    max_size=4)


@st.composite
def effective(draw):
    """(fields to merge into the resource, the aware datetime the parser must return)."""
    moment = draw(st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2040, 12, 31)))
    moment = moment.replace(microsecond=draw(st.sampled_from([0, moment.microsecond])))
    offset = timedelta(minutes=draw(st.integers(-12 * 60, 14 * 60).map(lambda m: m - m % 15)))
    zone = timezone(offset)
    aware = moment.replace(tzinfo=zone)
    form = draw(st.sampled_from(["dateTime", "dateTimeZ", "naive", "date", "yearMonth", "year",
                                 "instant", "periodStart", "periodEnd"]))
    text = aware.isoformat()
    if form == "dateTimeZ":
        aware = moment.replace(tzinfo=timezone.utc)
        text = moment.isoformat() + "Z"
    elif form == "naive":
        aware, text = moment.replace(tzinfo=timezone.utc), moment.isoformat()
    elif form == "date":
        aware = datetime(moment.year, moment.month, moment.day, tzinfo=timezone.utc)
        text = moment.date().isoformat()
    elif form == "yearMonth":
        aware, text = datetime(moment.year, moment.month, 1, tzinfo=timezone.utc), f"{moment.year:04d}-{moment.month:02d}"
    elif form == "year":
        aware, text = datetime(moment.year, 1, 1, tzinfo=timezone.utc), f"{moment.year:04d}"
    if form == "instant":
        return {"effectiveInstant": text}, aware
    if form == "periodStart":
        return {"effectivePeriod": {"start": text, "end": (aware + timedelta(minutes=5)).isoformat()}}, aware
    if form == "periodEnd":
        return {"effectivePeriod": {"end": text}}, aware
    return {"effectiveDateTime": text}, aware


@st.composite
def subject(draw):
    patient = draw(ids.filter(lambda s: "/" not in s))
    form = draw(st.sampled_from(["relative", "absolute", "history", "urn:uuid", "identifier", "typed"]))
    if form == "relative":
        return {"reference": f"Patient/{patient}", "display": "someone"}, patient
    if form == "absolute":
        return {"reference": f"https://fhir.example.org/r4/Patient/{patient}"}, patient
    if form == "history":
        return {"reference": f"Patient/{patient}/_history/3"}, patient
    if form == "urn:uuid":
        return {"reference": f"urn:uuid:{patient}", "type": "Patient"}, patient
    if form == "typed":
        return {"reference": f"Patient/{patient}", "type": "Patient"}, patient
    return {"identifier": {"system": "urn:mrn", "value": patient}}, patient


@st.composite
def device(draw):
    """(the ``device`` element or None, the device id and model the parser must return)."""
    device_id = draw(ids.filter(lambda s: "/" not in s))
    model = draw(st.one_of(st.none(), st.text(min_size=1, max_size=30)))
    form = draw(st.sampled_from(["none", "relative", "relative", "absolute", "history", "identifier", "metric"]))
    if form == "none":
        return None, None, None
    reference = {"relative": f"Device/{device_id}", "absolute": f"https://fhir.example.org/Device/{device_id}",
                 "history": f"Device/{device_id}/_history/2", "metric": f"DeviceMetric/{device_id}"}.get(form)
    element = {"reference": reference} if reference else {"identifier": {"system": "urn:serial", "value": device_id}}
    if model is not None:
        element["display"] = model
    return element, None if form == "metric" else device_id, model


@st.composite
def quantity(draw, mm_hg_range):
    """(valueQuantity, value in mmHg the parser must return)."""
    low, high = mm_hg_range
    unit = draw(st.sampled_from(["ucum", "ucum-no-system", "text-mmHg", "text-mm[Hg]", "kpa"]))
    if unit == "kpa":
        kpa = round(draw(st.floats(low / MM_HG_PER_KPA, high / MM_HG_PER_KPA)), 2)
        return {"value": kpa, "unit": "kPa", "system": UCUM, "code": "kPa"}, round(kpa * MM_HG_PER_KPA, 1)
    value = draw(st.one_of(st.integers(int(low) + 1, int(high)),
                           st.floats(low, high).map(lambda v: round(v, 1))))
    quantity = {"ucum": {"value": value, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"},
                "ucum-no-system": {"value": value, "code": "mm[Hg]"},
                "text-mmHg": {"value": value, "unit": "mmHg"},
                "text-mm[Hg]": {"value": value, "unit": "mm[Hg]", "system": "http://example.org/units"}}[unit]
    return quantity, float(value)


def _component(code: str, display: str, value_quantity: dict, rng_codings: list) -> dict:
    coding = [{"system": LOINC, "code": code, "display": display}, *rng_codings]
    return {"code": {"coding": coding, "text": display}, "valueQuantity": value_quantity}


@st.composite
def valid_observations(draw):
    systolic_q, systolic = draw(quantity((95.0, 260.0)))
    diastolic_q, diastolic = draw(quantity((35.0, min(systolic - 2.0, 190.0))))
    if not (0 < diastolic < systolic <= 300 and diastolic <= 200):
        diastolic_q, diastolic = {"value": 60, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}, 60.0
    components = [
        _component(SYSTOLIC, "Systolic blood pressure", systolic_q, draw(extra_codings.map(lambda c: c[:1]))),
        _component(DIASTOLIC, "Diastolic blood pressure", diastolic_q, []),
    ]
    if draw(st.booleans()):
        components.append({"code": {"coding": [{"system": LOINC, "code": "8867-4"}]},
                           "valueQuantity": {"value": 72, "unit": "/min", "system": UCUM, "code": "/min"}})
    components = draw(st.permutations(components))
    panel = [{"system": LOINC, "code": BP_PANEL, "display": "Blood pressure panel"}, *draw(extra_codings)]
    effective_fields, moment = draw(effective())
    subject_field, patient = draw(subject())
    status = draw(st.sampled_from(STATUSES))
    device_field, device_id, device_model = draw(device())
    extras = draw(extra_fields)
    if device_field is not None:
        extras["device"] = device_field
    resource = {
        **extras,
        "resourceType": "Observation",
        "status": status,
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "vital-signs"}]}],
        "code": {"coding": list(draw(st.permutations(panel)))},
        "subject": subject_field,
        **effective_fields,
        "component": list(components),
    }
    has_id = status == "entered-in-error" or draw(st.booleans())  # a retraction needs its id
    if has_id:
        resource["id"] = draw(ids)
    keys = draw(st.permutations(list(resource)))
    resource = {key: resource[key] for key in keys}
    observation_id = resource["id"] if has_id else \
        "sha1-" + hashlib.sha1(orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)).hexdigest()
    expected = {"observation_id": observation_id, "patient_id": patient, "effective": moment,
                "systolic": systolic, "diastolic": diastolic, "status": status,
                "device_id": device_id, "device_model": device_model}
    return resource, expected


def _drop_component(code):
    def apply(resource):
        resource["component"] = [c for c in resource["component"]
                                 if not any(x.get("code") == code for x in c["code"]["coding"])]
    return apply


def _set(path, value):
    def apply(resource):
        target = resource
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return apply


def _component_quantity(code, key, value):
    def apply(resource):
        for component in resource["component"]:
            if any(x.get("code") == code for x in component["code"]["coding"]):
                component["valueQuantity"][key] = value
    return apply


def _swap_values(resource):
    for component in resource["component"]:
        codes = {x.get("code") for x in component["code"]["coding"]}
        if SYSTOLIC in codes:
            component["valueQuantity"] = {"value": 70, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}
        elif DIASTOLIC in codes:
            component["valueQuantity"] = {"value": 90, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}


def _delete(*keys):
    def apply(resource):
        for key in keys:
            resource.pop(key, None)
    return apply


BREAKS = [
    (_drop_component(SYSTOLIC), "missing systolic"),
    (_drop_component(DIASTOLIC), "missing diastolic"),
    (_set(["status"], "cancelled"), "cancelled"),
    (_set(["status"], "registered"), "registered"),
    (_delete("status"), "missing status"),
    (_set(["resourceType"], "Patient"), "not an Observation"),
    (_set(["code"], {"coding": [{"system": LOINC, "code": "8480-6"}]}), "not a blood-pressure panel"),
    (_set(["subject"], {"reference": "Group/12"}), "not a Patient"),
    (_delete("subject"), "missing subject"),
    (_delete("effectiveDateTime", "effectiveInstant", "effectivePeriod"), "missing effective time"),
    (_set(["effectiveDateTime"], "yesterday"), "not a FHIR dateTime"),
    (_component_quantity(SYSTOLIC, "value", "120"), "not a number"),
    (_component_quantity(DIASTOLIC, "code", "cm[H2O]"), "unit must be"),
    (_component_quantity(SYSTOLIC, "value", 900), "impossible"),
    (_swap_values, "diastolic not below systolic"),
    (_set(["component"], []), "no component"),
    (_set(["component"], "120/80"), "wrong JSON type"),
]


@st.composite
def invalid_observations(draw):
    """(broken resource, a fragment its rejection reason must contain)."""
    resource, _ = draw(valid_observations())
    resource = orjson.loads(orjson.dumps(resource))  # a deep copy
    resource.setdefault("id", "broken-1")
    if resource["status"] == "entered-in-error":
        resource["status"] = "final"  # a retraction's values and time need not be usable
    breaker, fragment = draw(st.sampled_from(BREAKS))
    if breaker is BREAKS[11][0] or fragment in ("unit must be", "impossible"):
        # value/unit breaks need a UCUM mm[Hg] quantity to bite
        for component in resource["component"]:
            if "valueQuantity" in component and component["valueQuantity"].get("code") != "/min":
                component["valueQuantity"] = {"value": 100 if any(
                    x.get("code") == SYSTOLIC for x in component["code"]["coding"]) else 60,
                    "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}
    if fragment == "not a FHIR dateTime":
        _delete("effectiveInstant", "effectivePeriod")(resource)
    breaker(resource)
    return resource, fragment


# Breaks a retraction survives: its values become NaN, or its time None.
RETRACTION_BREAKS = [
    (_drop_component(SYSTOLIC), "values"),
    (_component_quantity(DIASTOLIC, "value", "80"), "values"),
    (_component_quantity(SYSTOLIC, "value", 900), "values"),
    (_swap_values, "values"),
    (_set(["component"], "120/80"), "values"),
    (_delete("effectiveDateTime", "effectiveInstant", "effectivePeriod"), "effective"),
    (None, "nothing"),
]


@st.composite
def retractions(draw):
    """(an entered-in-error resource, what is broken in it: "values", "effective" or "nothing",
    the expected of its unbroken form)."""
    resource, expected = draw(valid_observations())
    resource = orjson.loads(orjson.dumps(resource))
    resource["status"] = "entered-in-error"
    resource.setdefault("id", "retracted-1")
    expected = {**expected, "status": "entered-in-error", "observation_id": resource["id"]}
    breaker, broken = draw(st.sampled_from(RETRACTION_BREAKS))
    if broken == "values":  # value breaks need a UCUM mm[Hg] quantity to bite, as in invalid_observations
        for component in resource["component"]:
            if component["valueQuantity"].get("code") != "/min":
                component["valueQuantity"] = {"value": 100 if any(
                    x.get("code") == SYSTOLIC for x in component["code"]["coding"]) else 60,
                    "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}
    if breaker is not None:
        breaker(resource)
    return resource, broken, expected
