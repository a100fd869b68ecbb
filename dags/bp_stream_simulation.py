"""bp_stream_simulation: produce a burst of synthetic FHIR Observations into Kafka."""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

from _bp_common import DAG_DEFAULTS, TAGS, plain, settings, world_scenario
from bp_core.simulation.scenarios import SCENARIO_NAMES

DOC = """
### Stream simulation (manual)

Produces `count` synthetic FHIR R4 blood-pressure Observations for `patients` patients
into the `$BP_TOPIC` Kafka topic (key = patient id) at about `rate` messages per second,
exactly as `bp produce` does: each patient's FHIR Patient goes first to the compacted
`$BP_PATIENTS_TOPIC`. The running consumer (`bp consume`) scores the readings and routes
them to Elasticsearch / the archive / the DLQ.

`scenario` is the simulated world (empty: the Airflow Variable `bp_scenario`, else
`baseline`; see docs/simulation.md).

Trigger it by hand ("Trigger DAG" with params); it has no schedule.
"""


@dag(
    dag_id="bp_stream_simulation",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    tags=[*TAGS, "kafka", "simulation"],
    doc_md=DOC,
    params={
        "count": Param(5000, type="integer", minimum=1, description="messages to produce"),
        "rate": Param(500, type=["null", "number"], exclusiveMinimum=0,
                      description="messages per second; empty: as fast as possible"),
        "patients": Param(100, type="integer", minimum=1, description="synthetic patients"),
        "seed": Param(0, type="integer", description="random seed"),
        "scenario": Param(None, type=["null", "string"], enum=[None, *SCENARIO_NAMES],
                          description="simulated world; empty: the Variable bp_scenario, else baseline"),
    },
    **DAG_DEFAULTS,
)
def bp_stream_simulation():
    @task
    def produce() -> dict:
        from bp_core.simulation.stream import produce as produce_observations

        params = get_current_context()["params"]
        summary = produce_observations(settings(), count=params["count"], rate=params["rate"],
                                       patients=params["patients"], seed=params["seed"],
                                       scenario=world_scenario(params))
        return plain(summary)

    produce()


bp_stream_simulation()
