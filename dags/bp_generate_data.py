"""bp_generate_data: a new labelled training data set every day."""

from __future__ import annotations

import pendulum
from airflow.sdk import CronTriggerTimetable, Param, dag, get_current_context, task

from _bp_common import DAG_DEFAULTS, TAGS, TRAINING_DATA, plain, run_date, settings, world_scenario
from bp_core.simulation.scenarios import SCENARIO_NAMES

DOC = """
### Generate training data

Writes a labelled synthetic blood-pressure data set (`readings.parquet` +
`manifest.json`) to `$BP_DATA_DIR/training/<YYYY-MM-DD>` (`<YYYY-MM-DD>-<scenario>` for
another world than `baseline`), the date being the run's data
interval start; its readings end at that date's midnight UTC (history, never the
future). A rerun of the same date and world overwrites the same partition (idempotent).

Updates the `bp_training_data` asset, whose event carries the partition path and the
scenario; that triggers `bp_train_model`.

Params: `patients`, `readings`, `seed` (empty: derived from the date, so a rerun
reproduces the same data), `scenario` (the simulated world; empty: the Airflow Variable
`bp_scenario`, else `baseline`; see docs/simulation.md).
"""


@dag(
    dag_id="bp_generate_data",
    # "@daily" spelled as an explicit timetable: a run's data interval is then its
    # trigger date whatever `create_cron_data_intervals` says.
    schedule=CronTriggerTimetable("@daily", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    tags=[*TAGS, "data"],
    doc_md=DOC,
    params={
        "patients": Param(500, type="integer", minimum=1, description="synthetic patients"),
        "readings": Param(50_000, type="integer", minimum=1, description="readings in the data set"),
        "seed": Param(None, type=["null", "integer"], description="random seed; empty: derived from the date"),
        "scenario": Param(None, type=["null", "string"], enum=[None, *SCENARIO_NAMES],
                          description="simulated world; empty: the Variable bp_scenario, else baseline"),
    },
    **DAG_DEFAULTS,
)
def bp_generate_data():
    @task(outlets=[TRAINING_DATA])
    def generate() -> dict:
        from bp_core.simulation.datasets import generate_dataset

        context = get_current_context()
        params = context["params"]
        day = run_date(context)
        seed = params["seed"] if params["seed"] is not None else int(day.replace("-", ""))
        scenario = world_scenario(params)
        # One partition per date and world: two worlds on one day never overwrite each other.
        out_dir = settings().data_dir / "training" / (day if scenario == "baseline" else f"{day}-{scenario}")
        generate_dataset(out_dir, patients=params["patients"], readings=params["readings"], seed=seed,
                         end=pendulum.parse(day), scenario=scenario)
        summary = {"path": str(out_dir), "date": day, "patients": params["patients"],
                   "readings": params["readings"], "seed": seed, "scenario": scenario}
        context["outlet_events"][TRAINING_DATA].extra = plain(summary)
        return summary

    generate()


bp_generate_data()
