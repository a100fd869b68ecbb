"""bp_core.model.metrics (hand-computed cases); the promotion rules are in test_promotion_gate.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bp_core.model.metrics import METRIC_NAMES, classification_metrics, confusion_counts, subgroup_recall


def test_probabilities_hand_computed():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8])
    categories = np.array(["normal", "normal", "hypertensive_crisis", "hypotension"])
    m = classification_metrics(y, p, threshold=0.5, true_category=categories)
    assert tuple(m) == METRIC_NAMES
    assert m["roc_auc"] == pytest.approx(0.75)           # 3 of 4 (pos, neg) pairs ranked right
    assert m["pr_auc"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert m["precision"] == 1.0 and m["recall"] == 0.5
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["brier"] == pytest.approx((0.01 + 0.16 + 0.4225 + 0.04) / 4)
    assert m["crisis_recall"] == 0.0 and m["hypotension_recall"] == 1.0
    assert m["positive_rate"] == 0.5 and m["flagged_rate"] == 0.25


def test_binary_rule_flags_hand_computed():
    y = np.array([0, 1, 1, 0, 1])
    flags = np.array([0.0, 1.0, 0.0, 1.0, 1.0])
    m = classification_metrics(y, flags, threshold=0.5)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["brier"] == pytest.approx(2 / 5)            # the error rate for 0/1 scores
    assert m["roc_auc"] == pytest.approx((1 + 2 / 3 - 1 / 2) / 2)
    assert m["pr_auc"] == pytest.approx(2 / 3 * 2 / 3 + 1 / 3 * 3 / 5)
    assert math.isnan(m["crisis_recall"]) and math.isnan(m["hypotension_recall"])


def test_threshold_is_inclusive():
    m = classification_metrics(np.array([1, 0]), np.array([0.5, 0.49]), threshold=0.5)
    assert m["recall"] == 1.0 and m["precision"] == 1.0


def test_undefined_figures_are_nan_not_errors():
    m = classification_metrics(np.array([0, 0, 0]), np.array([0.1, 0.2, 0.7]), threshold=0.5,
                               true_category=np.array(["normal"] * 3))
    assert math.isnan(m["roc_auc"]) and math.isnan(m["pr_auc"]) and math.isnan(m["recall"])
    assert m["precision"] == 0.0 and m["f1"] == 0.0
    assert math.isnan(m["crisis_recall"])
    nothing_flagged = classification_metrics(np.array([0, 1]), np.array([0.1, 0.2]), threshold=0.5)
    assert math.isnan(nothing_flagged["precision"]) and nothing_flagged["recall"] == 0.0


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        classification_metrics(np.array([0, 1]), np.array([0.5]), threshold=0.5)
    with pytest.raises(ValueError):
        classification_metrics(np.array([]), np.array([]), threshold=0.5)


def test_subgroup_recall_and_confusion_counts():
    scores = np.array([0.9, 0.2, 0.6, 0.1])
    assert subgroup_recall(scores, np.array([True, True, False, False]), 0.5) == 0.5
    assert math.isnan(subgroup_recall(scores, np.zeros(4, bool), 0.5))
    counts = confusion_counts(np.array([1, 1, 0, 0]), scores, 0.5)
    assert counts.tolist() == [[1, 1], [1, 1]]



# --------------------------------------------------------------------------- false alarms at equal recall


def test_false_positives_at_recall_hand_computed():
    from bp_core.model.metrics import false_positives_at_recall

    y = np.array([1, 0, 1, 0, 1, 0])
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    assert false_positives_at_recall(y, p, 1 / 3) == (0, 0.9)
    assert false_positives_at_recall(y, p, 0.5) == (1, 0.7)      # 2 of 3 needed: down to 0.7
    assert false_positives_at_recall(y, p, 2 / 3) == (1, 0.7)
    assert false_positives_at_recall(y, p, 1.0) == (2, 0.5)
    # Tied scores are flagged together: 0.7 flags three readings, two of them false.
    assert false_positives_at_recall(y, np.array([0.9, 0.9, 0.7, 0.7, 0.7, 0.1]), 0.5) == (2, 0.7)
    assert false_positives_at_recall(np.zeros(3), np.array([0.1, 0.2, 0.3]), 0.5)[0] == -1
    with pytest.raises(ValueError, match="recall"):
        false_positives_at_recall(y, p, 0.0)
    with pytest.raises(ValueError, match="same length"):
        false_positives_at_recall(y, p[:3], 0.5)


def test_false_alarms_at_equal_recall_compares_at_the_reference_operating_point():
    from bp_core.model.metrics import false_alarms_at_equal_recall

    y = np.array([1, 0, 1, 0, 1, 0])
    reference = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])    # at 0.65: 2 of 3 found, 1 false alarm
    candidate = np.array([0.9, 0.1, 0.8, 0.2, 0.7, 0.3])    # ranks every anomaly first
    result = false_alarms_at_equal_recall(y, reference, candidate, threshold=0.65)
    assert result == {"recall": pytest.approx(2 / 3), "reference_false_alarms": 1.0, "candidate_false_alarms": 0.0,
                      "candidate_threshold": 0.8}
    nothing = false_alarms_at_equal_recall(y, reference, candidate, threshold=0.95)
    assert math.isnan(nothing["recall"]) and math.isnan(nothing["candidate_false_alarms"])
