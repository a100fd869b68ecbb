"""bp_core.simulation.datasets and ``bp generate``: the data set contract the training code reads."""

import hashlib
import json

import orjson
import pyarrow.parquet as pq
import pytest

from bp_core.cli import main
from bp_core.simulation.datasets import COLUMNS, generate_dataset, load_dataset, read_manifest


def test_generate_writes_the_contract(tmp_path):
    out = generate_dataset(tmp_path / "ds", patients=20, readings=500, seed=3, fhir=True)
    schema = pq.read_schema(out / "readings.parquet")
    assert schema.names == list(COLUMNS)
    assert str(schema.field("effective").type) == "timestamp[ms, tz=UTC]"
    frame = load_dataset(out)
    assert len(frame) == 500 and set(frame["label"].unique()) <= {0, 1}
    assert frame["episode"].isna().sum() == 0
    manifest = read_manifest(out)
    assert manifest["seed"] == 3 and manifest["patients"] == 20 and manifest["readings"] == 500
    assert manifest["sha256"] == hashlib.sha256((out / "readings.parquet").read_bytes()).hexdigest()
    assert manifest["label_rate"] == pytest.approx(frame["label"].mean())
    assert manifest["start"] <= manifest["end"]
    lines = (out / "observations.ndjson").read_bytes().splitlines()
    assert len(lines) == 500
    first = orjson.loads(lines[0])
    assert first["id"] == frame["observation_id"].iloc[0]
    assert load_dataset(out / "readings.parquet").equals(frame)


def test_same_seed_same_content(tmp_path):
    a = load_dataset(generate_dataset(tmp_path / "a", patients=5, readings=100, seed=9))
    b = load_dataset(generate_dataset(tmp_path / "b", patients=5, readings=100, seed=9))
    assert a.equals(b)


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
