"""bp_generate_data: a new labelled training data set every day."""

from __future__ import annotations

import pendulum
from airflow.sdk import CronTriggerTimetable, Param, dag, get_current_context, task

from _bp_common import DAG_DEFAULTS, TAGS, TRAINING_DATA, plain, run_date, settings

DOC = """
### Generate training data

Writes a labelled synthetic blood-pressure data set (`readings.parquet` +
`manifest.json`) to `$BP_DATA_DIR/training/<YYYY-MM-DD>`, the date being the run's data
interval start. A rerun of the same date overwrites the same partition (idempotent).

Updates the `bp_training_data` asset, whose event carries the partition path; that
triggers `bp_train_model`.

Params: `patients`, `readings`, `seed` (empty: derived from the date, so a rerun
reproduces the same data).
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
        out_dir = settings().data_dir / "training" / day
        generate_dataset(out_dir, patients=params["patients"], readings=params["readings"], seed=seed,
                         start=pendulum.parse(day))
        summary = {"path": str(out_dir), "date": day, "patients": params["patients"],
                   "readings": params["readings"], "seed": seed}
        context["outlet_events"][TRAINING_DATA].extra = plain(summary)
        return summary

    generate()


bp_generate_data()
