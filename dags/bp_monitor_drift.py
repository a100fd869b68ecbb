"""bp_monitor_drift: every hour, compare the live stream with the champion's training data."""

from __future__ import annotations

import pendulum
from airflow.sdk import CronTriggerTimetable, Param, dag, get_current_context, task

from _bp_common import DAG_DEFAULTS, DRIFT_DETECTED, TAGS, plain, settings

DOC = """
### Drift monitor

Every hour, compares the readings the consumer ingested in the `since` window ending at
the run's time (anomalies in `$BP_ES_INDEX`, normal readings in `$BP_ARCHIVE_DIR`) with
the data set the `champion` was trained on: each model feature, the model's probability
and the alert rate, overall and per device fleet (`bp drift`, docs/drift.md).

- Logs a run in the MLflow experiment `bp-drift` (a metric per feature and fleet, the
  report as `drift_report.json`).
- Writes Prometheus figures to `$BP_METRICS_TEXTFILE_DIR/bp_drift.prom` (node-exporter
  textfile collector) and pushes them to `$BP_PUSHGATEWAY_URL` when set.
- On drift, updates the `bp_drift_detected` asset (once per champion version within
  `rearm_hours`), which triggers `bp_train_model` on data from the world the stream is
  now in.

"Cannot compare" (no champion yet, no readings in the window) is a successful run.
"""


@dag(
    dag_id="bp_monitor_drift",
    schedule=CronTriggerTimetable("@hourly", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    tags=[*TAGS, "drift", "mlflow"],
    doc_md=DOC,
    params={
        "since": Param("24h", type="string", pattern=r"^\s*[1-9][0-9]*\s*[smhdw]\s*$",
                       description="window length back from the run's time: 90m, 24h, 7d"),
        "rearm_hours": Param(24, type="integer", minimum=0,
                             description="signal drift again for the same champion only after this long"),
    },
    **DAG_DEFAULTS,
)
def bp_monitor_drift():
    @task
    def check() -> dict:
        from datetime import timedelta

        from bp_core.drift import parse_duration
        from bp_core.drift.monitor import monitor

        context = get_current_context()
        params = context["params"]
        end = context.get("data_interval_end") or context["dag_run"].run_after
        outcome = monitor(settings(), since=parse_duration(params["since"]), end=end,
                          rearm=timedelta(hours=params["rearm_hours"]))
        summary = plain(outcome)
        summary.pop("report")  # in MLflow (drift_report.json): too large for an XCom
        return summary

    @task.short_circuit
    def drifted(outcome: dict) -> bool:
        return bool(outcome["signal"])

    @task(outlets=[DRIFT_DETECTED])
    def signal(outcome: dict) -> dict:
        extra = {k: outcome[k] for k in ("model_version", "drifted", "readings", "mlflow_run_id")}
        get_current_context()["outlet_events"][DRIFT_DETECTED].extra = extra
        return extra

    outcome = check()
    drifted(outcome) >> signal(outcome)


bp_monitor_drift()
