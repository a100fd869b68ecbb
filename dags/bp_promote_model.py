"""bp_promote_model: the champion/challenger gate, run after every new challenger."""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

from _bp_common import CHALLENGER_MODEL, DAG_DEFAULTS, TAGS, plain, settings

DOC = """
### Promote the challenger (or not)

Triggered by each `bp_challenger_model` event. Evaluates the `challenger` and the
`champion` versions of `bp-anomaly-classifier` on the same fresh hold-out set and moves
the `champion` alias to the challenger only when it beats the champion by at least
`margin`; the first challenger becomes champion. The decision and its reason are
recorded by `bp_core.model.promotion.promote` as model-version tags; this DAG only logs
it and returns it (XCom).

A **rejected** challenger is a successful run: the gate did its job. The consumer picks
up a new champion by itself, without a restart. To undo a promotion:
`bp promote --rollback`.
"""


@dag(
    dag_id="bp_promote_model",
    schedule=[CHALLENGER_MODEL],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    tags=[*TAGS, "mlflow", "promotion"],
    doc_md=DOC,
    params={
        "margin": Param(0.002, type="number", minimum=0,
                        description="minimum improvement of the gate metric over the champion"),
        "holdout_readings": Param(50_000, type="integer", minimum=100, description="size of the hold-out set"),
        "seed": Param(None, type=["null", "integer"], description="hold-out seed; empty: promote()'s default"),
    },
    **DAG_DEFAULTS,
)
def bp_promote_model():
    @task
    def promote() -> dict:
        import logging

        from bp_core.model.promotion import promote as promote_challenger

        params = get_current_context()["params"]
        decision = promote_challenger(settings(), margin=params["margin"],
                                      holdout_readings=params["holdout_readings"], seed=params["seed"])
        logging.getLogger("bp_promote_model").info(
            "promotion decision: %s (challenger v%s; champion now v%s): %s", decision.decision,
            decision.challenger_version, decision.champion_version, decision.reason)
        return plain(decision)

    promote()


bp_promote_model()
