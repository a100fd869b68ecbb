"""bp_promote_model: the promotion gate, after every new challenger and hourly (deferred decisions)."""

from __future__ import annotations

import pendulum
from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, get_current_context, task

from _bp_common import CHALLENGER_MODEL, DAG_DEFAULTS, TAGS, plain, settings

DOC = """
### Judge the challenger (promote it, or not)

Runs on each `bp_challenger_model` event **and** every hour, so that a challenger
`deferred` for want of live shadow evidence is judged again as the evidence grows.
Calls `bp_core.model.promotion.promote`: the `challenger` version of
`bp-anomaly-classifier` against the `champion` (or the rules alone when there is none) on
one fresh hold-out, at the serving threshold, plus its live shadow evidence. The decision
and every figure are recorded as tags of the challenger version before any alias moves.
The rules of the gate: docs/model-lifecycle.md.

**promoted, rejected, deferred and unchanged are all successful runs**: the gate did its
job. With no challenger yet (a new deployment, before the first training) the task is
skipped: nothing to judge. A run fails when the gate could not decide (registry
unreachable, champion not loadable, a concurrent promote or rollback moved `champion`):
nothing was moved, and the retry judges again. A rolled-back version is rejected on every run until an operator
brings it back with `bp promote --version N --reason TEXT`. To undo a promotion:
`bp promote --rollback --reason TEXT`.
"""


@dag(
    dag_id="bp_promote_model",
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("17 * * * *", timezone="UTC"),
                                 assets=[CHALLENGER_MODEL]),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    tags=[*TAGS, "mlflow", "promotion"],
    doc_md=DOC,
    params={
        "margin": Param(0.002, type="number", minimum=0, description="minimum PR AUC gain over the champion"),
        "holdout_readings": Param(50_000, type="integer", minimum=100, description="size of the hold-out set"),
        "seed": Param(None, type=["null", "integer"], description="hold-out seed; empty: derived from the version"),
    },
    **DAG_DEFAULTS,
)
def bp_promote_model():
    @task
    def promote() -> dict:
        import logging

        from airflow.sdk.exceptions import AirflowSkipException

        from bp_core.errors import ModelUnavailable
        from bp_core.model.promotion import promote as judge_challenger

        params = get_current_context()["params"]
        try:
            decision = judge_challenger(settings(), margin=params["margin"],
                                        holdout_readings=params["holdout_readings"], seed=params["seed"])
        except ModelUnavailable as exc:  # no challenger yet: nothing to judge, and nothing to retry
            raise AirflowSkipException(str(exc)) from exc
        logger = logging.getLogger("bp_promote_model")
        logger.info("promotion decision: %s (challenger v%s; champion now v%s): %s", decision.decision,
                    decision.challenger_version, decision.champion_version, decision.reason)
        for line in decision.summary()[2:]:
            logger.info("%s", line)
        return plain(decision)

    promote()


bp_promote_model()
