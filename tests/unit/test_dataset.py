"""bp_core.simulation.datasets and ``bp generate``: the data set contract the training code reads."""

import hashlib
import json

import orjson
import pyarrow.parquet as pq
import pytest

from datetime import datetime, timedelta, timezone

from bp_core.cli import main
from bp_core.simulation.cohort import FRAME_COLUMNS
from bp_core.simulation.datasets import COLUMNS, dataset_start, generate_dataset, load_dataset, read_manifest


def test_generate_writes_the_contract(tmp_path):
    out = generate_dataset(tmp_path / "ds", patients=20, readings=500, seed=3, fhir=True)
    schema = pq.read_schema(out / "readings.parquet")
    assert schema.names == list(COLUMNS) == list(FRAME_COLUMNS)
    assert str(schema.field("effective").type) == "timestamp[ms, tz=UTC]"
    frame = load_dataset(out)
    assert len(frame) == 500 and set(frame["label"].unique()) <= {0, 1}
    assert frame["episode"].isna().sum() == 0 and frame["change"].isna().sum() == 0
    assert frame["device_id"].str.len().eq(36).all() and frame["device_model"].notna().all()
    manifest = read_manifest(out)
    assert manifest["seed"] == 3 and manifest["patients"] == 20 and manifest["readings"] == 500
    assert manifest["scenario"] == "baseline"
    assert manifest["sha256"] == hashlib.sha256((out / "readings.parquet").read_bytes()).hexdigest()
    assert manifest["label_rate"] == pytest.approx(frame["label"].mean())
    assert manifest["start"] <= manifest["end"]
    lines = (out / "observations.ndjson").read_bytes().splitlines()
    assert len(lines) == 500
    first = orjson.loads(lines[0])
    assert first["id"] == frame["observation_id"].iloc[0]
    assert first["device"] == {"reference": f"Device/{frame['device_id'].iloc[0]}",
                               "display": frame["device_model"].iloc[0]}
    assert load_dataset(out / "readings.parquet").equals(frame)


def test_same_seed_same_content(tmp_path):
    a = load_dataset(generate_dataset(tmp_path / "a", patients=5, readings=100, seed=9))
    b = load_dataset(generate_dataset(tmp_path / "b", patients=5, readings=100, seed=9))
    assert a.equals(b)


def test_scenario_is_recorded_and_unknown_ones_refused(tmp_path):
    out = generate_dataset(tmp_path / "offset", patients=40, readings=400, seed=3, scenario="cuff-offset")
    assert read_manifest(out)["scenario"] == "cuff-offset"
    with pytest.raises(ValueError, match="unknown scenario"):
        generate_dataset(tmp_path / "x", patients=4, readings=40, seed=3, scenario="mars")


def test_default_times_are_never_in_the_future():
    now = datetime(2026, 3, 2, 15, 30, tzinfo=timezone.utc)
    small = dataset_start(patients=100, readings=10_000, now=now)
    assert small == datetime(2025, 1, 1, tzinfo=timezone.utc), "historical by default"
    huge = dataset_start(patients=10, readings=100_000, now=now)   # 10,000 slots of 4 h: ~4.6 years
    assert huge + 10_000 * timedelta(hours=4) == datetime(2026, 3, 2, tzinfo=timezone.utc)
    end = datetime(2026, 3, 2, tzinfo=timezone.utc)
    assert dataset_start(patients=10, readings=95, end=end) == end - 10 * timedelta(hours=4)
    explicit = datetime(2030, 1, 1, tzinfo=timezone.utc)
    assert dataset_start(patients=10, readings=95, start=explicit, now=now) == explicit, "--start says so"
    with pytest.raises(ValueError):
        dataset_start(patients=10, readings=95, start=explicit, end=end)


def test_cli_generate(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["generate", "--patients", "10", "--readings", "200", "--seed", "1", "--out", str(out),
                 "--start", "2024-02-01T00:00:00"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["start"].startswith("2024-02-01") and manifest["readings"] == 200


@pytest.mark.parametrize("argv", [["--readings", "0"], ["--patients", "-3"], ["--start", "yesterday"]])
def test_cli_generate_bad_args(tmp_path, capsys, argv):
    code = _exit_code(["generate", "--out", str(tmp_path / "x"), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err


def test_cli_generate_unwritable_out(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert _exit_code(["generate", "--readings", "10", "--out", str(blocker / "sub")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def _exit_code(argv):
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code
