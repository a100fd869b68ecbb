"""The scheduled drift check (DAG ``bp_monitor_drift``): run it, record it, say whether to signal.

``monitor`` runs ``check_drift`` for a window ending at the run's time, logs an MLflow
run in experiment ``bp-drift`` (metrics per feature and fleet, the JSON report as the
artifact ``drift_report.json``), writes Prometheus figures (a node-exporter textfile and,
when configured, a Pushgateway push) and returns a ``MonitorOutcome``.

"Cannot compare" (no champion yet, no readings) is an outcome, not a failure: it is
recorded (``bp_drift_can_compare 0``) and nothing is signalled.

Signalling (the ``bp_drift_detected`` Asset, which triggers retraining) happens once per
champion version within ``rearm``: while a drift already signalled for this champion is
being handled (new data, training, the gate), hourly checks that still see it do not ask
for another retraining. A new champion, or ``rearm`` later, re-arms it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from bp_core.errors import CannotCompare
from bp_core.settings import Settings

log = logging.getLogger(__name__)

EXPERIMENT_NAME = "bp-drift"
REPORT_ARTIFACT = "drift_report.json"
TEXTFILE_NAME = "bp_drift.prom"
PUSH_JOB = "bp_monitor_drift"
DEFAULT_REARM = timedelta(hours=24)


@dataclass
class MonitorOutcome:
    """What one scheduled check found and did."""

    compared: bool
    drift: bool = False
    signal: bool = False
    reason: str | None = None           # why it could not compare, or why it did not signal
    model_version: str | None = None
    drifted: list[str] = field(default_factory=list)
    readings: int = 0
    mlflow_run_id: str | None = None
    report: dict | None = None


def monitor(settings: Settings, *, since: timedelta, end: datetime, rearm: timedelta = DEFAULT_REARM,
            es=None) -> MonitorOutcome:
    """One scheduled check: compare, log to MLflow, write Prometheus figures.

    Raises:
        MlflowException: the tracking store failed (a real failure: the task retries).
    """
    from bp_core.drift.check import check_drift

    try:
        report = check_drift(settings, since=since, now=end, es=es)
    except CannotCompare as exc:
        outcome = MonitorOutcome(compared=False, reason=str(exc))
        log.info("drift check: cannot compare: %s", exc)
    else:
        body = report.as_dict()
        outcome = MonitorOutcome(compared=True, drift=report.drift, model_version=report.model_version,
                                 drifted=report.drifted(), readings=report.readings, report=body)
        if report.drift:
            earlier = _signalled_since(settings, report.model_version, end - rearm)
            outcome.signal = earlier is None
            if earlier:
                outcome.reason = f"already signalled for v{report.model_version} by MLflow run {earlier}"
    outcome.mlflow_run_id = log_to_mlflow(settings, outcome, end)
    write_prometheus(settings, outcome, end)
    return outcome


# --------------------------------------------------------------------------- MLflow


def _experiment_id(client, settings: Settings) -> str:
    """Experiment ``bp-drift``, created when missing (local stores: artifacts under data_dir)."""
    from bp_core.model.training import ensure_experiment

    return ensure_experiment(client, settings, EXPERIMENT_NAME)


def _metric_key(*parts: str) -> str:
    """An MLflow metric name from report names (letters, digits, ``_-. /`` only)."""
    return ".".join(re.sub(r"[^A-Za-z0-9_\-. /]", "_", part) for part in parts)


def metrics_of(report: dict) -> dict[str, float]:
    """The report as flat metrics: ``drift``, ``readings``, ``<feature>.score`` and
    ``segment.<fleet>.<feature>.score``, ``segment.<fleet>.drift``/``readings``."""
    metrics = {"drift": float(report["drift"]), "readings": float(report["window"]["readings"])}
    for name, entry in report["features"].items():
        if entry["score"] is not None:
            metrics[_metric_key(name, "score")] = float(entry["score"])
    for fleet, segment in report["segments"].items():
        metrics[_metric_key("segment", fleet, "drift")] = float(segment["drift"])
        metrics[_metric_key("segment", fleet, "readings")] = float(segment["readings"])
        for name, entry in segment["features"].items():
            if entry["score"] is not None:
                metrics[_metric_key("segment", fleet, name, "score")] = float(entry["score"])
    return {k: v for k, v in metrics.items() if v == v and abs(v) != float("inf")}


def log_to_mlflow(settings: Settings, outcome: MonitorOutcome, end: datetime) -> str:
    """One run in ``bp-drift``; returns its id."""
    from bp_core.model.registry import client_for

    client = client_for(settings.mlflow_tracking_uri)
    experiment_id = _experiment_id(client, settings)
    tags = {"drift.compared": str(outcome.compared).lower(), "drift.detected": str(outcome.drift).lower(),
            "drift.signalled": str(outcome.signal).lower(), "drift.window_end": end.isoformat()}
    if outcome.model_version:
        tags["drift.model_version"] = outcome.model_version
    if outcome.reason:
        tags["drift.reason"] = outcome.reason[:4000]
    if outcome.drifted:
        tags["drift.drifted"] = ", ".join(outcome.drifted)[:4000]
    run = client.create_run(experiment_id, run_name=f"drift-{end:%Y%m%dT%H%M}", tags=tags)
    run_id = run.info.run_id
    try:
        if outcome.report is not None:
            from mlflow.entities import Metric

            stamp = int(end.timestamp() * 1000)
            metrics = [Metric(key, value, stamp, 0) for key, value in metrics_of(outcome.report).items()]
            for start in range(0, len(metrics), 1000):
                client.log_batch(run_id, metrics=metrics[start:start + 1000])
            client.log_dict(run_id, outcome.report, REPORT_ARTIFACT)
        client.set_terminated(run_id, "FINISHED")
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    return run_id


def _signalled_since(settings: Settings, model_version: str, since: datetime) -> str | None:
    """The id of a ``bp-drift`` run after ``since`` that signalled drift for this champion."""
    from bp_core.model.registry import client_for

    client = client_for(settings.mlflow_tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=(f"tags.`drift.signalled` = 'true' and tags.`drift.model_version` = '{model_version}' "
                       f"and attributes.start_time >= {int(since.timestamp() * 1000)}"),
        max_results=1, order_by=["attributes.start_time DESC"])
    return runs[0].info.run_id if runs else None


# --------------------------------------------------------------------------- Prometheus


def registry_of(outcome: MonitorOutcome, end: datetime):
    """The check's figures as a ``prometheus_client.CollectorRegistry``."""
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()
    Gauge("bp_drift_last_check_timestamp_seconds", "End of the last checked window (Unix time)",
          registry=registry).set(end.timestamp())
    Gauge("bp_drift_can_compare", "1 when the last check could compare (a champion, readings, its data)",
          registry=registry).set(int(outcome.compared))
    Gauge("bp_drift_detected", "1 when the last check found drift", registry=registry).set(int(outcome.drift))
    Gauge("bp_drift_window_readings", "Readings in the last checked window", registry=registry).set(outcome.readings)
    if outcome.report is not None:
        score = Gauge("bp_drift_score", "Drift score of the last check", ["segment", "feature"], registry=registry)
        threshold = Gauge("bp_drift_threshold", "Threshold the score is compared with", ["segment", "feature"],
                          registry=registry)
        segment_drift = Gauge("bp_drift_segment_detected", "1 when a fleet's readings drifted", ["segment"],
                              registry=registry)
        parts = [("overall", outcome.report["features"])]
        parts += [(fleet, s["features"]) for fleet, s in outcome.report["segments"].items()]
        for segment, features in parts:
            for name, entry in features.items():
                if entry["score"] is not None:
                    score.labels(segment, name).set(entry["score"])
                    threshold.labels(segment, name).set(entry["threshold"])
        for fleet, s in outcome.report["segments"].items():
            segment_drift.labels(fleet).set(int(s["drift"]))
    return registry


def write_prometheus(settings: Settings, outcome: MonitorOutcome, end: datetime) -> None:
    """The textfile (``settings.metrics_textfile_dir``/bp_drift.prom, atomically replaced)
    and a Pushgateway push (``settings.pushgateway_url``), each when configured. A push
    that fails is logged, not raised: the textfile and MLflow still hold the figures."""
    from prometheus_client import push_to_gateway, write_to_textfile

    registry = registry_of(outcome, end)
    if settings.metrics_textfile_dir:
        folder = Path(settings.metrics_textfile_dir)
        folder.mkdir(parents=True, exist_ok=True)
        write_to_textfile(str(folder / TEXTFILE_NAME), registry)
    if settings.pushgateway_url:
        try:
            push_to_gateway(settings.pushgateway_url, job=PUSH_JOB, registry=registry, timeout=10)
        except OSError as exc:
            log.warning("drift figures not pushed to %s: %s", settings.pushgateway_url, exc)
