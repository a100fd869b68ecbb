"""The promotion gate's pure rules (``bp_core.model.gate``) and the decision record."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bp_core.model.decision import RECORD_TAG, PromotionDecision
from bp_core.model.gate import (GateParameters, LiveEvidence, judge, recall_tolerance, relative_change, served_flags,
                                served_metrics, versus_champion, versus_rules)

PARAMS = GateParameters(threshold=0.5, margin=0.002, alert_rate_band=0.10, brier_margin=0.01, min_shadow_readings=5000)
SIZES = {"crisis_recall": 50, "hypotension_recall": 2000}


def figures(**changes) -> dict[str, float]:
    base = {"pr_auc": 0.93, "roc_auc": 0.96, "f1": 0.84, "precision": 0.85, "recall": 0.83, "brier": 0.08,
            "crisis_recall": 1.0, "hypotension_recall": 0.72, "served_f1": 0.842, "served_precision": 0.83,
            "served_recall": 0.85, "served_alert_rate": 0.38}
    return {**base, **changes}


RULES = figures(pr_auc=0.76, brier=0.12, served_f1=0.8407, served_alert_rate=0.381)


def failed(checks) -> set[str]:
    return {c.name for c in checks if not c.passed}


# ---------------------------------------------------------------------------- served decision


def test_served_is_rules_or_model_at_the_threshold():
    rules = np.array([1, 0, 0, 1, 0])
    proba = np.array([0.1, 0.5, 0.49, 0.9, 0.0])
    assert served_flags(rules, proba, 0.5).tolist() == [True, True, False, True, False]
    assert served_flags(rules, None, 0.5).tolist() == [True, False, False, True, False]


def test_served_metrics_against_the_truth():
    y = np.array([1, 1, 0, 0])
    figures_ = served_metrics(y, np.array([1, 0, 0, 0]), np.array([0.0, 0.7, 0.6, 0.1]), 0.5)
    # served: [1, 1, 1, 0] -> tp 2, fp 1, fn 0
    assert figures_ == pytest.approx({"served_f1": 0.8, "served_precision": 2 / 3, "served_recall": 1.0,
                                      "served_alert_rate": 0.75})


def test_relative_change():
    assert relative_change(0.42, 0.40) == pytest.approx(0.05)
    assert relative_change(0.0, 0.0) == 0.0
    assert relative_change(0.1, 0.0) == math.inf


# ---------------------------------------------------------------------------- no champion: the rules


def test_a_first_model_that_beats_the_rules_is_promoted_and_says_so():
    decision, reason, checks = judge(figures(), None, RULES, PARAMS, SIZES)
    assert decision == "promoted"
    assert reason.startswith("no champion; the challenger beats the rules alone")
    assert [c.name for c in checks] == ["pr_auc", "served_f1", "brier", "served_alert_rate"]


@pytest.mark.parametrize("changes, failing", [
    ({"pr_auc": 0.60}, {"pr_auc"}),                       # the shuffled-label model
    ({"pr_auc": 0.76}, {"pr_auc"}),                       # equal is not above
    ({"served_f1": 0.8406}, {"served_f1"}),               # adds alerts that cost more than they catch
    ({"brier": 0.1301}, {"brier"}),                       # worse calibrated than the rules' flags + margin
    ({"served_alert_rate": 0.42}, {"served_alert_rate"}),  # +10.2 % alerts
])
def test_a_first_model_that_does_not_beat_the_rules_is_kept_out(changes, failing):
    decision, reason, checks = judge(figures(**changes), None, RULES, PARAMS, SIZES)
    assert decision == "rejected" and failed(checks) == failing
    assert "does not beat the rules alone" in reason and "champion of last resort" in reason


def test_equal_served_f1_is_enough():
    assert not failed(versus_rules(figures(served_f1=0.8407), RULES, PARAMS))


# ---------------------------------------------------------------------------- against a champion


def test_a_better_challenger_passes_the_hold_out_checks():
    checks = versus_champion(figures(pr_auc=0.935), figures(), PARAMS, SIZES)
    assert not failed(checks)
    assert [c.name for c in checks] == ["pr_auc", "crisis_recall", "hypotension_recall", "served_alert_rate", "brier"]


@pytest.mark.parametrize("changes, failing", [
    ({"pr_auc": 0.931}, {"pr_auc"}),                                # gain 0.001 < margin 0.002
    ({"pr_auc": math.nan}, {"pr_auc"}),
    ({"crisis_recall": 0.97}, {"crisis_recall"}),                   # more than one reading of 50
    ({"hypotension_recall": 0.7150}, {"hypotension_recall"}),       # tolerance 0.002 (2000 readings)
    ({"served_alert_rate": 0.3400}, {"served_alert_rate"}),         # -10.5 %: miscalibrated, fewer alerts
    ({"served_alert_rate": 0.4200}, {"served_alert_rate"}),         # +10.5 %
    ({"brier": 0.0901}, {"brier"}),
])
def test_each_hold_out_check_can_reject(changes, failing):
    checks = versus_champion(figures(**{"pr_auc": 0.94, **changes}), figures(), PARAMS, SIZES)
    assert failed(checks) == failing


def test_small_losses_within_the_tolerances_pass():
    challenger = figures(pr_auc=0.94, crisis_recall=0.98, hypotension_recall=0.7185, served_alert_rate=0.417,
                         brier=0.0899)
    assert not failed(versus_champion(challenger, figures(), PARAMS, SIZES))


def test_the_recall_tolerance_is_one_reading_of_the_group_at_least_0_002():
    assert recall_tolerance(1000) == 0.002 and recall_tolerance(100) == 0.01 and recall_tolerance(0) == math.inf


def test_a_guarded_recall_without_readings_is_not_guarded():
    checks = versus_champion(figures(pr_auc=0.94, crisis_recall=math.nan), figures(crisis_recall=math.nan), PARAMS, SIZES)
    crisis = next(c for c in checks if c.name == "crisis_recall")
    assert crisis.passed and "nothing to guard" in crisis.requirement


# ---------------------------------------------------------------------------- live evidence


def test_without_enough_live_evidence_the_decision_is_deferred_with_the_count():
    decision, reason, checks = judge(figures(pr_auc=0.94), figures(), RULES, PARAMS, SIZES,
                                     LiveEvidence(1234, 0.38, 0.39))
    assert decision == "deferred" and "1,234 of 5,000 readings shadow-scored so far" in reason
    assert checks[-1].name == "shadow_readings" and not checks[-1].passed
    assert judge(figures(pr_auc=0.94), figures(), RULES, PARAMS, SIZES, None)[0] == "deferred"


def test_enough_live_evidence_within_the_band_promotes():
    decision, reason, checks = judge(figures(pr_auc=0.94), figures(), RULES, PARAMS, SIZES,
                                     LiveEvidence(6000, 0.380, 0.400))
    assert decision == "promoted" and "on live traffic live_alert_rate 0.4000 vs 0.3800" in reason
    assert [c.name for c in checks][-2:] == ["shadow_readings", "live_alert_rate"]


def test_a_live_alert_rate_out_of_the_band_rejects():
    decision, reason, _ = judge(figures(pr_auc=0.94), figures(), RULES, PARAMS, SIZES, LiveEvidence(6000, 0.38, 0.43))
    assert decision == "rejected" and "live_alert_rate" in reason and "+13.2%" in reason


def test_zero_shadow_readings_turns_the_live_evidence_off():
    params = GateParameters(min_shadow_readings=0)
    decision, reason, checks = judge(figures(pr_auc=0.94), figures(), RULES, params, SIZES, LiveEvidence(0, 0.0, 0.0))
    assert decision == "promoted" and "not required" in reason
    assert "shadow_readings" not in {c.name for c in checks}


def test_a_hold_out_failure_rejects_before_looking_at_live_evidence():
    decision, _, checks = judge(figures(pr_auc=0.90), figures(), RULES, PARAMS, SIZES, LiveEvidence(0, 0.0, 0.0))
    assert decision == "rejected" and "shadow_readings" not in {c.name for c in checks}


def test_parameters_come_from_the_settings():
    from bp_core.settings import Settings

    settings = Settings.from_env({"BP_GATE_ALERT_RATE_BAND": "0.2", "BP_GATE_BRIER_MARGIN": "0.005",
                                  "BP_GATE_MIN_SHADOW_READINGS": "100", "BP_MODEL_THRESHOLD": "0.4"})
    assert GateParameters.from_settings(settings, margin=0.01) == GateParameters(0.4, 0.01, 0.2, 0.005, 100)


# ---------------------------------------------------------------------------- the record


def test_the_record_holds_every_figure_and_reads_back():
    decision_, reason, checks = judge(figures(pr_auc=0.94), figures(), RULES, PARAMS, SIZES, LiveEvidence(10, 0.3, 0.3))
    decision = PromotionDecision(decision_, reason, "3", "2", "2", challenger_metrics=figures(pr_auc=0.94, roc_auc=math.nan),
                                 champion_metrics=figures(), rules_metrics=RULES, holdout_rows=5000, holdout_seed=7,
                                 checks=checks, parameters=PARAMS, decision_id="abc", decided_at="2026-03-02T00:00:00+00:00")
    tags = decision.tags()
    assert tags["promotion.decision"] == "deferred" and tags["promotion.champion_version"] == "2"
    assert tags["promotion.checks"].splitlines()[-1].startswith("FAILS: shadow_readings 10.0000 vs 5000.0000 fails")
    assert len(tags) <= 8, "each tag is two requests to a tracking server"
    record = json.loads(tags[RECORD_TAG], parse_constant=lambda name: pytest.fail(f"{name} in the record"))
    assert record["challenger_metrics"]["roc_auc"] is None and record["rules_metrics"]["pr_auc"] == 0.76
    assert record["parameters"] == {"threshold": 0.5, "margin": 0.002, "alert_rate_band": 0.1, "brier_margin": 0.01,
                                    "min_shadow_readings": 5000}
    again = PromotionDecision.from_record(record, completed=True)
    assert again.checks == checks and again.parameters == PARAMS and again.completed
    assert again.summary()[:2] == decision.summary()[:2]


def test_the_summary_is_a_table_of_every_figure():
    lines = PromotionDecision("rejected", "why", "2", None, None, challenger_metrics=figures(), rules_metrics=RULES,
                              holdout_rows=5000, holdout_seed=7000002, checks=versus_rules(figures(), RULES, PARAMS),
                              parameters=PARAMS).summary()
    text = "\n".join(lines)
    assert "challenger v2" in text and "rules only" in text and "champion v" not in text
    for name in ("pr_auc", "brier", "served_f1", "served_alert_rate", "hypotension_recall"):
        assert any(line.startswith(name) for line in lines), name
    assert "alert-rate band ±10%" in text
