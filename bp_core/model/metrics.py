"""Evaluation metrics for the anomaly classifier: pure functions, no I/O.

One function, ``classification_metrics``, computes every figure training logs and
promotion compares, for a model's probabilities or for the rules' 0/1 flags alike, so
"model" and "rules-only" numbers are always computed the same way.

A metric that is undefined on the given data (ROC AUC with one class present, recall
on a subgroup with no readings) is ``nan``, never an exception: a small hold-out may
simply contain no hypertensive crisis.

``false_alarms_at_equal_recall`` compares two scorers where it matters to a clinician:
set each one's threshold so that both find the same share of true anomalies, and count
the false alarms each then raises.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from bp_core.rules import CRISIS as CRISIS_CATEGORY, HYPOTENSION as HYPOTENSION_CATEGORY

# Keys of the dict classification_metrics returns, in logging order.
METRIC_NAMES: tuple[str, ...] = (
    "roc_auc",
    "pr_auc",
    "f1",
    "precision",
    "recall",
    "brier",
    "crisis_recall",
    "hypotension_recall",
    "positive_rate",
    "flagged_rate",
)


def _safe_ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator else math.nan


def subgroup_recall(scores: np.ndarray, in_group: np.ndarray, threshold: float) -> float:
    """Share of a subgroup's readings whose score reaches the threshold.

    Args:
        scores: probabilities (or 0/1 flags), shape (n,).
        in_group: boolean mask of the subgroup, shape (n,).
        threshold: score at or above which a reading counts as flagged.
    Returns:
        The recall in [0, 1], or nan when the subgroup is empty.
    """
    in_group = np.asarray(in_group, dtype=bool)
    count = int(in_group.sum())
    return _safe_ratio(int((np.asarray(scores)[in_group] >= threshold).sum()), count)


def classification_metrics(y_true: np.ndarray, scores: np.ndarray, *, threshold: float,
                           true_category: np.ndarray | None = None) -> dict[str, float]:
    """Every figure used to judge a scorer on one data set.

    Args:
        y_true: true labels, 0/1, shape (n,).
        scores: P(anomaly) from a model, or the rules' 0/1 flags, shape (n,).
        threshold: decision threshold (a reading is flagged when score >= threshold);
            for 0/1 flags any value in (0, 1] gives the flags themselves.
        true_category: the noise-free AHA category of each reading (strings), used for
            the recall on hypertensive-crisis and hypotensive readings; None -> nan.
    Returns:
        A dict with the keys of ``METRIC_NAMES``: ``roc_auc``, ``pr_auc`` (average
        precision), ``f1``, ``precision`` and ``recall`` at the threshold, ``brier``
        (mean squared error of the scores), ``crisis_recall``, ``hypotension_recall``,
        ``positive_rate`` (share of true anomalies) and ``flagged_rate`` (share flagged).
        Undefined figures are nan.
    Raises:
        ValueError: the arrays do not have the same length, or the set is empty.
    """
    y = np.asarray(y_true).astype(np.int64, copy=False)
    p = np.asarray(scores, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"y_true and scores must be 1-D and the same length, got {y.shape} and {p.shape}")
    if y.size == 0:
        raise ValueError("cannot evaluate on an empty set")
    flagged = p >= threshold
    true_positives = int(np.sum(flagged & (y == 1)))
    predicted_positives = int(flagged.sum())
    actual_positives = int(y.sum())
    precision = _safe_ratio(true_positives, predicted_positives)
    recall = _safe_ratio(true_positives, actual_positives)
    f1 = _safe_ratio(2 * true_positives, predicted_positives + actual_positives)
    both_classes = 0 < actual_positives < y.size
    metrics = {
        "roc_auc": float(roc_auc_score(y, p)) if both_classes else math.nan,
        "pr_auc": float(average_precision_score(y, p)) if actual_positives else math.nan,
        "f1": f1,
        "precision": precision,
        "recall": recall,
        "brier": float(np.mean((np.clip(p, 0.0, 1.0) - y) ** 2)),
        "crisis_recall": math.nan,
        "hypotension_recall": math.nan,
        "positive_rate": actual_positives / y.size,
        "flagged_rate": predicted_positives / y.size,
    }
    if true_category is not None:
        categories = np.asarray(true_category)
        metrics["crisis_recall"] = subgroup_recall(p, categories == CRISIS_CATEGORY, threshold)
        metrics["hypotension_recall"] = subgroup_recall(p, categories == HYPOTENSION_CATEGORY, threshold)
    return metrics


def confusion_counts(y_true: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """The 2x2 confusion matrix at a threshold.

    Args:
        y_true: true labels, 0/1.
        scores: probabilities or 0/1 flags.
        threshold: score at or above which a reading is flagged.
    Returns:
        int64 array [[tn, fp], [fn, tp]] (rows = truth, columns = prediction).
    """
    y = np.asarray(y_true).astype(bool)
    flagged = np.asarray(scores, dtype=np.float64) >= threshold
    return np.array([[np.sum(~y & ~flagged), np.sum(~y & flagged)],
                     [np.sum(y & ~flagged), np.sum(y & flagged)]], dtype=np.int64)


def false_positives_at_recall(y_true: np.ndarray, scores: np.ndarray, recall: float) -> tuple[int, float]:
    """The false positives of a scorer at the highest threshold where it reaches a recall.

    A threshold flags every reading scored at or above it (tied scores go together).

    Args:
        y_true: true labels, 0/1, shape (n,).
        scores: the scorer's scores, shape (n,).
        recall: the share of true anomalies to find, in (0, 1].
    Returns:
        (false positives, threshold); (-1, nan) when there is no true anomaly.
    Raises:
        ValueError: the arrays differ in shape, or ``recall`` is outside (0, 1].
    """
    y = np.asarray(y_true).astype(bool)
    p = np.asarray(scores, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"y_true and scores must be 1-D and the same length, got {y.shape} and {p.shape}")
    if not 0.0 < recall <= 1.0:
        raise ValueError(f"recall must be in (0, 1], got {recall}")
    positives = int(y.sum())
    if not positives:
        return -1, math.nan
    order = np.argsort(-p, kind="stable")
    sorted_scores = p[order]
    true_positives = np.cumsum(y[order])
    # The last index of each run of equal scores: thresholds are the distinct scores.
    run_ends = np.flatnonzero(np.append(sorted_scores[1:] != sorted_scores[:-1], True))
    needed = math.ceil(recall * positives - 1e-9)
    first = run_ends[np.searchsorted(true_positives[run_ends], needed)]
    return int(first + 1 - true_positives[first]), float(sorted_scores[first])


def false_alarms_at_equal_recall(y_true: np.ndarray, reference_scores: np.ndarray, candidate_scores: np.ndarray,
                                 *, threshold: float) -> dict[str, float]:
    """The false positives of two scorers at the same recall: the reference's at ``threshold``.

    Args:
        y_true: true labels, 0/1, shape (n,).
        reference_scores: the reference scorer's scores (e.g. the single-reading model).
        candidate_scores: the other scorer's scores on the same readings.
        threshold: the reference's operating threshold; its recall there is the target.
    Returns:
        ``recall`` (the target), ``reference_false_alarms``, ``candidate_false_alarms``
        (each at its own highest threshold reaching the target) and
        ``candidate_threshold``; all nan when the target is undefined or zero.
    """
    y = np.asarray(y_true).astype(bool)
    positives = int(y.sum())
    target = _safe_ratio(int(np.sum(y & (np.asarray(reference_scores, dtype=np.float64) >= threshold))), positives)
    if not target > 0:
        return {"recall": math.nan, "reference_false_alarms": math.nan, "candidate_false_alarms": math.nan,
                "candidate_threshold": math.nan}
    reference, _ = false_positives_at_recall(y, reference_scores, target)
    candidate, candidate_threshold = false_positives_at_recall(y, candidate_scores, target)
    return {"recall": target, "reference_false_alarms": float(reference), "candidate_false_alarms": float(candidate),
            "candidate_threshold": candidate_threshold}
