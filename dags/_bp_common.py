"""What the bp-monitor DAGs share: their Assets, default arguments and small helpers.

Kept import-light on purpose: it is read at every DAG parse, so it imports nothing from
``bp_core`` beyond the settings object and the scenarios (inside functions) and nothing
heavy. (DAG files read the scenario names, ``bp_core.simulation.scenarios``, a pure-Python
module, at parse time for their params' enum.)
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Asset

# Fixed logical identities: the physical location (BP_DATA_DIR, the MLflow server) is
# a deployment detail carried in each asset event's ``extra``, so an environment
# change never renames an asset in the metadata DB.
TRAINING_DATA = Asset(name="bp_training_data", uri="bp-monitor://training-data")
CHALLENGER_MODEL = Asset(name="bp_challenger_model", uri="bp-monitor://models/bp-anomaly-classifier/challenger")
# Updated by bp_monitor_drift when the live stream drifted from the champion's training
# data; one of bp_train_model's triggers.
DRIFT_DETECTED = Asset(name="bp_drift_detected", uri="bp-monitor://drift/detected")

TAGS = ["bp-monitor"]

DEFAULT_ARGS = {
    "owner": "bp-monitor",
    "retries": 2,
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": 2.0,  # first retry after 2 min, the second after 4
    "max_retry_delay": timedelta(minutes=10),
}

DAG_DEFAULTS = {
    "catchup": False,
    "max_active_runs": 1,
    "default_args": DEFAULT_ARGS,
}


def run_date(context) -> str:
    """The date a run works on, ``YYYY-MM-DD``: its data interval start, never now().

    A manual run may have no data interval (Airflow 3 allows a null logical date); it
    then falls back to the logical date, and last to ``run_after``.
    """
    for key in ("data_interval_start", "logical_date"):
        value = context.get(key)
        if value is not None:
            return value.strftime("%Y-%m-%d")
    return context["dag_run"].run_after.strftime("%Y-%m-%d")


def choose_training_data(explicit, triggering_events, training_dir):
    """The data set folder to train on: ``explicit`` when given, else the path in the newest
    triggering ``bp_training_data`` event, else the newest complete partition (one with a
    ``readings.parquet``) under ``training_dir``.

    Raises:
        FileNotFoundError: there is no data set at all.
    """
    from pathlib import Path

    if explicit:
        return Path(explicit)
    for events in triggering_events.values():
        for event in reversed(list(events)):  # newest event last
            path = (event.extra or {}).get("path")
            if path and Path(path).exists():
                return Path(path)
    partitions = sorted(p for p in Path(training_dir).glob("*") if (p / "readings.parquet").exists())
    if not partitions:
        raise FileNotFoundError(f"no training data set under {training_dir}: run bp_generate_data first")
    return partitions[-1]


def world_scenario(params) -> str:
    """The simulated world a task works in: its ``scenario`` param when set; else the
    Airflow Variable ``bp_scenario``, read now (at run time, never at parse time); else
    ``baseline``.

    Raises:
        ValueError: the Variable names no scenario (the message lists the valid ones).
    """
    from airflow.sdk import Variable

    from bp_core.simulation.scenarios import BASELINE, get_scenario

    name = (params or {}).get("scenario")
    if name is None:
        name = (Variable.get("bp_scenario", default=None) or "").strip()
    return get_scenario(name or BASELINE).name


def drift_events(triggering_events) -> list:
    """The ``bp_drift_detected`` events among a run's triggering asset events, oldest first."""
    return [event for events in triggering_events.values() for event in events
            if getattr(getattr(event, "asset", None), "name", None) == DRIFT_DETECTED.name]


def settings():
    """The bp-monitor settings of the worker's environment (read when a task runs)."""
    from bp_core.settings import Settings

    return Settings.from_env()


def plain(value):
    """A value made of JSON types only, for XCom and asset-event extras."""
    import dataclasses
    import enum
    import math
    import os

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return plain(value.value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None  # NaN/inf are not JSON: the Execution API would refuse the XCom
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if hasattr(value, "item"):  # numpy scalars
        return plain(value.item())
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)
