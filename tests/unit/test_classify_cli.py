"""``bp classify``: output records, exit codes, one-line errors."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

from bp_core.cli import main
from bp_core.commands.classify import classify_payload
from bp_core.model.serving import ServedModel
from bp_core.rules import DEFAULT_THRESHOLDS

FHIR_DIR = Path(__file__).parent.parent / "fixtures" / "fhir"
HL7 = FHIR_DIR / "hl7-r4-observation-example-bloodpressure.json"
HL7_DAR = FHIR_DIR / "hl7-r4-observation-example-bloodpressure-dar.json"
BP = Path(sys.executable).parent / "bp"


@pytest.fixture(autouse=True)
def _no_model(monkeypatch, tmp_path):
    """Rules only: no registry (a store that does not exist) and no model file, whatever
    a demo or a user left in ./data."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'no-store' / 'mlflow.db'}")
    monkeypatch.delenv("BP_MODEL_PATH", raising=False)


def run_classify(capsys, *argv: str) -> tuple[int, list[dict], str]:
    code = main(["classify", *argv])
    out, err = capsys.readouterr()
    return code, [orjson.loads(line) for line in out.splitlines()], err


def test_accepted_file_prints_one_record_and_exits_0(capsys):
    code, records, err = run_classify(capsys, str(HL7))
    assert code == 0 and err == ""
    assert records == [{
        "id": "blood-pressure", "patient": "example", "effective": "2012-09-17T00:00:00+00:00",
        "systolic": 107, "diastolic": 60, "category": "normal", "anomaly": False, "detected_by": [],
        "rule_anomaly": False, "anomaly_types": [], "source": str(HL7),
    }]


def test_rejected_resource_is_a_record_and_exits_1(capsys):
    code, records, err = run_classify(capsys, str(HL7), str(HL7_DAR))
    assert code == 1 and err == ""
    assert records[1] == {"id": "blood-pressure-dar", "source": str(HL7_DAR),
                          "error": "missing diastolic (dataAbsentReason: not-performed)"}


def test_bundle_gives_one_record_per_observation(capsys):
    code, records, _ = run_classify(capsys, str(FHIR_DIR / "bundle-searchset.json"))
    assert code == 0
    assert [(r["id"], r["category"], r["anomaly_types"]) for r in records] == [
        ("bp-s1", "hypertensive_crisis", ["systolic_high", "diastolic_high"]),
        ("bp-s2", "hypertension_stage_1", []),
    ]


def test_stdin(capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(HL7.read_bytes())))
    code, records, _ = run_classify(capsys, "-")
    assert code == 0 and records[0]["source"] == "<stdin>"


def test_not_json_on_stdin_is_a_reject_without_id(capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"hello")))
    code, records, _ = run_classify(capsys, "-")
    assert code == 1
    assert records == [{"source": "<stdin>", "error": records[0]["error"]}]
    assert records[0]["error"].startswith("not JSON")


def test_thresholds_come_from_settings(capsys, monkeypatch):
    monkeypatch.setenv("BP_SYSTOLIC_LOW", "110")
    _, records, _ = run_classify(capsys, str(HL7))
    assert records[0]["rule_anomaly"] is True and records[0]["anomaly_types"] == ["systolic_low"]


def test_missing_file_is_a_one_line_usage_error(capsys, tmp_path):
    missing = tmp_path / "nope.json"
    code, records, err = run_classify(capsys, str(HL7), str(missing))
    assert code == 2 and records == []  # nothing printed before the usage error
    assert err == f"bp classify: error: cannot read {missing}: No such file or directory\n"


def test_no_file_argument_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["classify"])
    assert info.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_a_served_model_adds_its_probability_and_decision():
    payload = (FHIR_DIR / "bundle-collection.json").read_bytes()
    model = ServedModel(name="m", version="7", predict_proba=lambda features: np.array([0.25, 0.75])[:len(features)])
    records = classify_payload(payload, "x", DEFAULT_THRESHOLDS, model, 0.5)
    assert [r["model_probability"] for r in records] == [0.25, 0.75]
    assert [r["model_version"] for r in records] == ["7", "7"]
    assert records[1]["anomaly"] and "model" in records[1]["detected_by"]
    assert "model_probability" not in classify_payload(payload, "x", DEFAULT_THRESHOLDS)[0]


@pytest.mark.skipif(not BP.exists(), reason="the bp entry point is not installed")
@pytest.mark.parametrize("args, expected_code", [
    ([str(FHIR_DIR / "observations.ndjson")], 0),
    ([str(HL7_DAR)], 1),
    (["/nonexistent/file.json"], 2),
])
def test_installed_command(args, expected_code):
    completed = subprocess.run([str(BP), "classify", *args], capture_output=True, text=True, timeout=60)
    assert completed.returncode == expected_code, completed.stderr
    assert "Traceback" not in completed.stderr
    if expected_code == 2:
        assert completed.stderr == "bp classify: error: cannot read /nonexistent/file.json: No such file or directory\n"
    else:
        assert all("source" in orjson.loads(line) for line in completed.stdout.splitlines())


def test_a_retraction_is_reported_not_scored(tmp_path, capsys):
    retraction = {"resourceType": "Observation", "id": "x1", "status": "entered-in-error",
                  "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
                  "subject": {"reference": "Patient/p1"}}
    path = tmp_path / "retraction.json"
    path.write_bytes(orjson.dumps(retraction))
    code, records, _ = run_classify(capsys, str(path))
    assert code == 0
    assert records == [{"id": "x1", "patient": "p1", "status": "entered-in-error",
                        "retracts": "Patient/p1/Observation/x1", "source": str(path)}]
