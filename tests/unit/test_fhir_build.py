"""bp_core.fhir.build: Observations and Patients valid against FHIR R4 (fhir.resources' R4B models)."""

from datetime import datetime, timedelta, timezone

import orjson
import pytest
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient

from bp_core.simulation.cohort import Cohort
from bp_core.fhir import codes
from bp_core.fhir.build import (build_observation, build_patient, device_fragment, observation_bytes,
                                 patient_bytes)

EFFECTIVE = datetime(2025, 3, 1, 8, 30, tzinfo=timezone(timedelta(hours=1)))
ARGS = dict(observation_id="obs-1", patient_id="pat-1", effective=EFFECTIVE, systolic_mm_hg=132, diastolic_mm_hg=84)


def test_observation_validates_as_fhir_r4_bp_profile():
    resource = build_observation(**ARGS)
    observation = Observation.model_validate(resource)
    assert observation.meta.profile == [codes.VITAL_SIGNS_BP_PROFILE]
    assert observation.category[0].coding[0].code == codes.VITAL_SIGNS
    assert observation.code.coding[0].code == codes.BP_PANEL
    assert observation.subject.reference == "Patient/pat-1"
    assert resource["effectiveDateTime"] == "2025-03-01T08:30:00+01:00"
    values = {c.code.coding[0].code: c.valueQuantity for c in observation.component}
    assert values[codes.SYSTOLIC].value == 132 and values[codes.DIASTOLIC].value == 84
    assert values[codes.SYSTOLIC].code == codes.MM_HG and values[codes.SYSTOLIC].system == codes.UCUM
    assert isinstance(resource["component"][0]["valueQuantity"]["value"], int)


DEVICE = dict(device_id="dev-1", device_model="HomeCheck Pro")


def test_observation_names_its_device():
    resource = build_observation(**ARGS, **DEVICE)
    observation = Observation.model_validate(resource)
    assert resource["device"] == {"reference": "Device/dev-1", "display": "HomeCheck Pro"}
    assert observation.device.reference == "Device/dev-1"
    assert "device" not in build_observation(**ARGS)
    assert build_observation(**ARGS, device_id="dev-2")["device"] == {"reference": "Device/dev-2"}


def test_fast_path_equals_dict_builder():
    assert orjson.loads(observation_bytes(**ARGS)) == build_observation(**ARGS)
    assert orjson.loads(observation_bytes(**ARGS, **DEVICE)) == build_observation(**ARGS, **DEVICE)
    fragment = device_fragment(**DEVICE)
    assert observation_bytes(**ARGS, device=fragment) == observation_bytes(**ARGS, **DEVICE)
    amended = {**ARGS, "status": "amended", "observation_id": 'we"ird'}
    assert orjson.loads(observation_bytes(**amended)) == build_observation(**amended)


def test_fast_path_accepts_preformatted_time():
    payload = observation_bytes(**{**ARGS, "effective": "2025-03-01T07:30:00+00:00"})
    assert orjson.loads(payload)["effectiveDateTime"] == "2025-03-01T07:30:00+00:00"


def test_naive_time_is_refused():
    with pytest.raises(ValueError):
        build_observation(**{**ARGS, "effective": datetime(2025, 1, 1)})


def test_patient_validates_and_carries_identity():
    patient = Cohort(3, seed=1).patients[0]
    resource = build_patient(patient)
    Patient.model_validate(resource)
    assert resource["id"] == patient.patient_id
    assert resource["gender"] in {"male", "female"}
    assert " ".join(resource["name"][0]["given"] + [resource["name"][0]["family"]]) == patient.name
    assert resource["birthDate"] == patient.birth_date.isoformat()


def test_patient_bytes_validate():
    patient = Cohort(3, seed=2, scenario="older-cohort").patients[1]
    resource = Patient.model_validate_json(patient_bytes(patient))
    assert resource.id == patient.patient_id and str(resource.birthDate) == patient.birth_date.isoformat()


@pytest.mark.parametrize("scenario", ["baseline", "cuff-offset", "older-cohort"])
def test_every_simulated_observation_validates(tmp_path, scenario):
    """The simulator's own Observations (the producer's and the data set's fast path)."""
    from bp_core.simulation.stream import iter_payloads

    cohort = Cohort(25, seed=3, scenario=scenario)
    payloads = list(iter_payloads(cohort, limit=200))
    frame = cohort.readings_frame(200)
    for (key, value), device_id, model in zip(payloads, frame["device_id"], frame["device_model"]):
        observation = Observation.model_validate_json(value)
        assert observation.subject.reference == f"Patient/{key.decode()}"
        assert observation.device.reference == f"Device/{device_id}" and observation.device.display == model
