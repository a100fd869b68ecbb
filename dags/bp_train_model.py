"""bp_train_model: retrain weekly, as soon as a new training data set lands, or on drift."""

from __future__ import annotations

import pendulum
from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, get_current_context, task

from _bp_common import (
    CHALLENGER_MODEL, DAG_DEFAULTS, DRIFT_DETECTED, TAGS, TRAINING_DATA, choose_training_data, drift_events, plain,
    settings, world_scenario,
)

DOC = """
### Train a challenger model

Runs every Monday 03:00 UTC, **or** when `bp_training_data` is updated, **or** when
`bp_drift_detected` is (the drift monitor, `bp_monitor_drift`). Trains the
anomaly classifier on one training data set, logs the run to MLflow (experiment
`bp-anomaly`) and registers a new version of `bp-anomaly-classifier` with the alias
`challenger`. Updates the `bp_challenger_model` asset, which triggers
`bp_promote_model`.

Which data set: the `data_path` param when given; else, when a drift event triggered
the run, a fresh labelled data set simulated from the world the stream is now in (the
`scenario` param, else the `bp_scenario` Variable, else `baseline`; `patients` and
`readings` params) into `$BP_DATA_DIR/training/<date>T<HHMM>-drift`; else the partition
named by the triggering `bp_training_data` event; else the newest partition under
`$BP_DATA_DIR/training/`.

Returns (XCom) the new version, its MLflow run id and key metrics.
"""


@dag(
    dag_id="bp_train_model",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 3 * * 1", timezone="UTC"),
        assets=(TRAINING_DATA | DRIFT_DETECTED),
    ),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    tags=[*TAGS, "mlflow", "training"],
    doc_md=DOC,
    params={
        "data_path": Param(None, type=["null", "string"],
                           description="training data set folder; empty: triggering event, else newest"),
        "seed": Param(0, type="integer", description="training random seed"),
        "C": Param(1.0, type="number", exclusiveMinimum=0, description="inverse regularisation strength"),
        "scenario": Param(None, type=["null", "string"],
                          description="after drift: the world to simulate; empty: the bp_scenario Variable, else baseline"),
        "patients": Param(500, type="integer", minimum=2, description="after drift: patients in the fresh data set"),
        "readings": Param(50_000, type="integer", minimum=100, description="after drift: readings in the fresh data set"),
    },
    **DAG_DEFAULTS,
)
def bp_train_model():
    @task(outlets=[CHALLENGER_MODEL])
    def train() -> dict:
        from bp_core.model.training import train_and_register

        context = get_current_context()
        params = context["params"]
        bp_settings = settings()
        events = context.get("triggering_asset_events") or {}
        if drift_events(events) and not params["data_path"]:
            data_path = fresh_data(context, bp_settings.data_dir / "training")
        else:
            data_path = choose_training_data(params["data_path"], events, bp_settings.data_dir / "training")
        result = train_and_register(bp_settings, data_path, seed=params["seed"], C=params["C"])
        summary = plain({
            "model_name": bp_settings.model_name,
            "model_version": str(result.model_version),
            "run_id": result.run_id,
            "data_path": str(data_path),
            "rows": result.rows,
            "seconds": round(float(result.seconds), 2),
            "metrics": result.metrics,
            "rules_metrics": result.rules_metrics,
        })
        context["outlet_events"][CHALLENGER_MODEL].extra = {
            k: summary[k] for k in ("model_name", "model_version", "run_id", "data_path")}
        return summary

    train()


def fresh_data(context, training_dir):
    """A labelled data set simulated from the world the stream is in now (after drift)."""
    from bp_core.simulation.datasets import generate_dataset

    params = context["params"]
    when = context["dag_run"].run_after
    out_dir = training_dir / f"{when:%Y-%m-%dT%H%M}-drift"
    return generate_dataset(out_dir, patients=params["patients"], readings=params["readings"],
                            seed=int(f"{when:%Y%m%d%H%M}") % 2**31, end=when, scenario=world_scenario(params))


bp_train_model()
