"""Labelled training data sets: written from the cohort simulator, read by training.

Layout of a data set directory (the contract with ``bp_core.model`` training)::

    readings.parquet    one row per reading, columns COLUMNS (types below)
    manifest.json       {seed, patients, readings, start, end, scenario, label_rate,
                         sha256, created_by}; sha256 is the parquet file's
    observations.ndjson optional: one FHIR Observation (JSON) per line

Columns beyond the reading itself say what a reader needs to check a model against the
simulator's truth: the true values and ``label``; ``episode`` (an acute episode) and
``change`` (a change of the patient's true level under way: a treatment start, an
illness, a drift, '' when none) with ``change_*_mm_hg``, the current shift of the true
level from the patient's starting baseline; ``device_id`` and ``device_model`` (the fleet).

Files are written to a temporary name and renamed, so a crashed or re-run task never
leaves a parquet file that its manifest does not describe.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from bp_core import __version__

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import pyarrow as pa

READINGS_FILE = "readings.parquet"
MANIFEST_FILE = "manifest.json"
OBSERVATIONS_FILE = "observations.ndjson"

# column -> Arrow type; the order is the file's column order.
COLUMNS: dict[str, str] = {
    "observation_id": "string",
    "patient_id": "string",
    "effective": "timestamp[ms, tz=UTC]",
    "systolic_mm_hg": "int64",
    "diastolic_mm_hg": "int64",
    "true_systolic_mm_hg": "double",
    "true_diastolic_mm_hg": "double",
    "label": "int64",
    "true_category": "string",
    "episode": "string",
    "condition": "string",
    "age": "int64",
    "sex": "string",
    "change": "string",
    "change_systolic_mm_hg": "double",
    "change_diastolic_mm_hg": "double",
    "device_id": "string",
    "device_model": "string",
}


def schema() -> pa.Schema:
    """The Arrow schema of ``readings.parquet``."""
    import pyarrow as pa

    types = {"string": pa.string(), "int64": pa.int64(), "double": pa.float64(),
             "timestamp[ms, tz=UTC]": pa.timestamp("ms", tz="UTC")}
    return pa.schema([(name, types[kind]) for name, kind in COLUMNS.items()])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _replace_atomically(tmp: Path, final: Path) -> None:
    with tmp.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, final)


def write_dataset(frame: pd.DataFrame, out_dir: str | Path, *, fhir: bool = False) -> Path:
    """Write ``frame`` (``Cohort.readings_frame`` columns) as a data set; return ``out_dir``.

    ``seed``, ``patients`` and ``scenario`` in the manifest come from ``frame.attrs`` (set
    by the cohort); without them ``seed`` and ``scenario`` are null and ``patients``
    counts distinct patient ids.
    With ``fhir``, also write ``observations.ndjson``. Existing files are replaced.

    Raises:
        KeyError: a contract column is missing from ``frame``.
        OSError: ``out_dir`` cannot be created or written.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise KeyError(f"frame lacks dataset columns: {', '.join(missing)}")
    # Column by column through the extension arrays (no object rows); times as UTC values.
    arrays = {name: pa.array(frame[name].array) for name in COLUMNS if name != "effective"}
    arrays["effective"] = pa.array(frame["effective"].dt.tz_convert(None).to_numpy())
    table = pa.table({name: arrays[name] for name in COLUMNS}).cast(schema())

    parquet_path = out / READINGS_FILE
    tmp = out / f".{READINGS_FILE}.tmp"
    pq.write_table(table, tmp, compression="zstd")
    _replace_atomically(tmp, parquet_path)
    if fhir:
        _write_observations(frame, out / OBSERVATIONS_FILE)

    effective = frame["effective"]
    manifest = {
        "seed": frame.attrs.get("seed"),
        "patients": int(frame.attrs.get("patients", frame["patient_id"].nunique())),
        "readings": len(frame),
        "start": effective.min().isoformat() if len(frame) else None,
        "end": effective.max().isoformat() if len(frame) else None,
        "scenario": frame.attrs.get("scenario"),
        "label_rate": float(frame["label"].mean()) if len(frame) else 0.0,
        "sha256": _sha256(parquet_path),
        "created_by": f"bp-monitor {__version__} (bp_core.simulation.datasets)",
    }
    tmp_manifest = out / f".{MANIFEST_FILE}.tmp"
    tmp_manifest.write_text(json.dumps(manifest, indent=2) + "\n")
    _replace_atomically(tmp_manifest, out / MANIFEST_FILE)
    return out


def _write_observations(frame: pd.DataFrame, path: Path) -> None:
    """One FHIR Observation per line, built by the producer's fast path."""
    from bp_core.fhir.build import observation_bytes

    effective_text = format_effective_column(frame["effective"])
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as handle:
        for obs_id, patient_id, eff, sys_, dia, device_id, device_model in zip(
                frame["observation_id"].tolist(), frame["patient_id"].tolist(), effective_text,
                frame["systolic_mm_hg"].tolist(), frame["diastolic_mm_hg"].tolist(),
                frame["device_id"].tolist(), frame["device_model"].tolist()):
            handle.write(observation_bytes(observation_id=obs_id, patient_id=patient_id, effective=eff,
                                           systolic_mm_hg=sys_, diastolic_mm_hg=dia,
                                           device_id=device_id, device_model=device_model))
            handle.write(b"\n")
    _replace_atomically(tmp, path)


def format_effective_column(effective: pd.Series) -> list[str]:
    """ISO-8601 strings with a ``+00:00`` offset for a tz-aware UTC column, vectorised.

    Whole seconds are written without a fraction, others with milliseconds.
    """
    import numpy as np

    values = effective.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[ms]")
    whole = bool((values.astype(np.int64) % 1000 == 0).all())
    text = np.datetime_as_string(values, unit="s" if whole else "ms")
    return [t + "+00:00" for t in text.tolist()]


def generate_dataset(out_dir: str | Path, *, patients: int, readings: int, seed: int,
                     start: datetime | None = None, end: datetime | None = None, fhir: bool = False,
                     scenario: str = "baseline") -> Path:
    """Simulate a cohort and write its labelled data set to ``out_dir`` (Airflow's entry).

    Times: from ``start`` when given; else ending by ``end`` (``history_start``); else
    from ``DEFAULT_START`` (2025-01-01), or, when that would run past today, ending at
    today's midnight UTC: a default never dates a reading in the future.
    ``scenario`` is the simulated world (``bp_core.simulation.scenarios``), recorded in
    the manifest.

    Idempotent: the same arguments write byte-identical parquet content (for the
    default times, on the same day).

    Raises:
        ValueError: ``patients`` or ``readings`` is not positive, both ``start`` and
            ``end`` are given, either is naive, or ``scenario`` is unknown.
        OSError: ``out_dir`` cannot be written.
    """
    from bp_core.simulation.cohort import Cohort

    if patients < 1 or readings < 1:
        raise ValueError(f"patients and readings must be positive, got {patients} and {readings}")
    start = dataset_start(patients=patients, readings=readings, start=start, end=end)
    frame = Cohort(patients, seed, start, scenario=scenario).readings_frame(readings)
    return write_dataset(frame, out_dir, fhir=fhir)


def dataset_start(*, patients: int, readings: int, start: datetime | None = None, end: datetime | None = None,
                  now: datetime | None = None) -> datetime:
    """The first reading slot of a data set (see ``generate_dataset`` for the rule).

    Raises:
        ValueError: both ``start`` and ``end`` are given, or ``end`` is naive.
    """
    from datetime import timezone

    from bp_core.simulation.cohort import DEFAULT_INTERVAL, DEFAULT_START, history_start

    if start is not None and end is not None:
        raise ValueError("give start or end, not both")
    if start is not None:
        return start
    if end is not None:
        if end.tzinfo is None or end.utcoffset() is None:
            raise ValueError("end must be timezone-aware")
        return history_start(end, readings, patients)
    now = now or datetime.now(timezone.utc)
    if DEFAULT_START + (-(-readings // patients)) * DEFAULT_INTERVAL <= now:
        return DEFAULT_START
    midnight = now.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return history_start(midnight, readings, patients)


def load_dataset(path: str | Path) -> pd.DataFrame:
    """Read a data set's readings from its directory or its parquet file.

    Raises:
        FileNotFoundError: there is no ``readings.parquet`` there.
    """
    import pandas as pd

    path = Path(path)
    parquet_path = path / READINGS_FILE if path.is_dir() else path
    if not parquet_path.is_file():
        raise FileNotFoundError(f"no data set at {path} (expected {READINGS_FILE})")
    return pd.read_parquet(parquet_path)


def read_manifest(path: str | Path) -> dict:
    """The manifest of a data set (directory or its parquet file).

    Raises:
        FileNotFoundError: there is no ``manifest.json`` beside the readings.
    """
    path = Path(path)
    directory = path if path.is_dir() else path.parent
    return json.loads((directory / MANIFEST_FILE).read_text())
