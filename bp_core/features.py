"""The one definition of the model's input features, shared by training and serving.

``FEATURE_NAMES`` describe one reading (measured values, pulse pressure, mean arterial
pressure, hinges beyond the fixed clinical reference limits 140/90 and 90/60, a signed
worst exceedance and a squared deviation: what a logistic regression needs to say "far
from normal, whichever way"); ``CONTEXT_FEATURE_NAMES`` add the patient's 7-day context.
``model_matrix`` builds a model's input from its ``feature_names``, vectorised, for
training and the consumer alike. Each feature and why: docs/internals.md#model-features.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

# Clinical reference limits (mmHg): the brief's anomaly thresholds. Fixed on purpose.
SYSTOLIC_HIGH_MM_HG = 140.0
SYSTOLIC_LOW_MM_HG = 90.0
DIASTOLIC_HIGH_MM_HG = 90.0
DIASTOLIC_LOW_MM_HG = 60.0
# Reference centre and spread of the squared deviation: middle of the normal box and
# roughly a quarter of its width, so the term is ~1 at the box edge.
SYSTOLIC_CENTRE_MM_HG = 115.0
DIASTOLIC_CENTRE_MM_HG = 75.0
SYSTOLIC_SCALE_MM_HG = 25.0
DIASTOLIC_SCALE_MM_HG = 15.0

FEATURE_NAMES: tuple[str, ...] = (
    "systolic_mm_hg",
    "diastolic_mm_hg",
    "pulse_pressure_mm_hg",
    "mean_arterial_pressure_mm_hg",
    "systolic_above_high_mm_hg",
    "systolic_below_low_mm_hg",
    "diastolic_above_high_mm_hg",
    "diastolic_below_low_mm_hg",
    "worst_exceedance_mm_hg",
    "squared_deviation",
)


# The six features of a pair of values that say how far outside the normal box it is.
LIMIT_FEATURE_NAMES: tuple[str, ...] = FEATURE_NAMES[4:]

CONTEXT_FEATURE_NAMES: tuple[str, ...] = (
    "has_baseline",
    "systolic_minus_baseline_mm_hg",
    "diastolic_minus_baseline_mm_hg",
    *(f"baseline_{name}" for name in LIMIT_FEATURE_NAMES),
    *(f"midpoint_{name}" for name in LIMIT_FEATURE_NAMES),
    "arv_systolic_mm_hg",
)
SINGLE_READING_FEATURES = FEATURE_NAMES
CONTEXT_MODEL_FEATURES: tuple[str, ...] = FEATURE_NAMES + CONTEXT_FEATURE_NAMES
# Feature-set names, as training tags a model version.
FEATURE_SETS: dict[str, tuple[str, ...]] = {"single-reading": SINGLE_READING_FEATURES,
                                            "context": CONTEXT_MODEL_FEATURES}


def _as_pair(systolic, diastolic) -> tuple[np.ndarray, np.ndarray]:
    s = np.atleast_1d(np.asarray(systolic, dtype=np.float64))
    d = np.atleast_1d(np.asarray(diastolic, dtype=np.float64))
    if s.ndim != 1 or d.ndim != 1 or s.shape != d.shape:
        raise ValueError(f"systolic and diastolic must be 1-D arrays of equal length, got shapes {s.shape} and {d.shape}")
    return s, d


def _limit_features(s: np.ndarray, d: np.ndarray, out: np.ndarray) -> None:
    """Write the ``LIMIT_FEATURE_NAMES`` of (s, d) into ``out`` (shape (n, 6))."""
    # Signed excesses over each limit first (positive = outside), then hinge them.
    np.subtract(s, SYSTOLIC_HIGH_MM_HG, out=out[:, 0])
    np.subtract(SYSTOLIC_LOW_MM_HG, s, out=out[:, 1])
    np.subtract(d, DIASTOLIC_HIGH_MM_HG, out=out[:, 2])
    np.subtract(DIASTOLIC_LOW_MM_HG, d, out=out[:, 3])
    np.max(out[:, 0:4], axis=1, out=out[:, 4])
    np.maximum(out[:, 0:4], 0.0, out=out[:, 0:4])
    ds = (s - SYSTOLIC_CENTRE_MM_HG) / SYSTOLIC_SCALE_MM_HG
    dd = (d - DIASTOLIC_CENTRE_MM_HG) / DIASTOLIC_SCALE_MM_HG
    np.add(ds * ds, dd * dd, out=out[:, 5])


def feature_matrix(systolic: np.ndarray, diastolic: np.ndarray) -> np.ndarray:
    """Build the single-reading feature matrix from systolic and diastolic readings.

    Args:
        systolic: systolic pressures in mmHg, any real dtype, shape (n,) (a scalar is
            treated as one reading).
        diastolic: diastolic pressures in mmHg, same shape as ``systolic``.
    Returns:
        A new float64 array of shape (n, len(FEATURE_NAMES)), columns in
        ``FEATURE_NAMES`` order.
    Raises:
        ValueError: the two inputs are not 1-D arrays of the same length.
    """
    s, d = _as_pair(systolic, diastolic)
    out = np.empty((s.shape[0], len(FEATURE_NAMES)), dtype=np.float64)
    out[:, 0] = s
    out[:, 1] = d
    np.subtract(s, d, out=out[:, 2])
    np.add(d, out[:, 2] / 3.0, out=out[:, 3])
    _limit_features(s, d, out[:, 4:])
    return out


def context_feature_matrix(systolic: np.ndarray, diastolic: np.ndarray, context) -> np.ndarray:
    """Build the ``CONTEXT_FEATURE_NAMES`` columns of readings and their context.

    Args:
        systolic: systolic pressures in mmHg, shape (n,).
        diastolic: diastolic pressures in mmHg, shape (n,).
        context: the readings' ``bp_core.context.ContextColumns`` (``baseline_systolic``,
            ``baseline_diastolic``, ``arv_systolic``; NaN where absent), or None for
            readings without history.
    Returns:
        A new float64 array of shape (n, len(CONTEXT_FEATURE_NAMES)).
    Raises:
        ValueError: the inputs' lengths differ.
    """
    s, d = _as_pair(systolic, diastolic)
    n = s.shape[0]
    out = np.empty((n, len(CONTEXT_FEATURE_NAMES)), dtype=np.float64)
    if context is None:
        baseline_s, baseline_d, arv = s, d, np.zeros(n)
        out[:, 0] = 0.0
    else:
        baseline_s = np.asarray(context.baseline_systolic, dtype=np.float64)
        baseline_d = np.asarray(context.baseline_diastolic, dtype=np.float64)
        arv = np.asarray(context.arv_systolic, dtype=np.float64)
        if baseline_s.shape != s.shape or baseline_d.shape != s.shape or arv.shape != s.shape:
            raise ValueError(f"context columns must have the readings' length {n}")
        has = ~np.isnan(baseline_s)
        out[:, 0] = has
        baseline_s = np.where(has, baseline_s, s)  # no baseline: the reading stands for itself
        baseline_d = np.where(has, baseline_d, d)
        arv = np.nan_to_num(arv, nan=0.0)
    np.subtract(s, baseline_s, out=out[:, 1])
    np.subtract(d, baseline_d, out=out[:, 2])
    _limit_features(baseline_s, baseline_d, out[:, 3:9])
    _limit_features((s + baseline_s) * 0.5, (d + baseline_d) * 0.5, out[:, 9:15])
    out[:, 15] = arv
    return out


def model_matrix(systolic: np.ndarray, diastolic: np.ndarray, context, feature_names: Sequence[str]) -> np.ndarray:
    """The input matrix of a model that expects ``feature_names``: training and serving.

    Args:
        systolic: systolic pressures in mmHg, shape (n,).
        diastolic: diastolic pressures in mmHg, shape (n,).
        context: the readings' ``ContextColumns``, or None (no history: context
            features as for a patient's first reading). Ignored by a single-reading set.
        feature_names: the model's features, any of ``CONTEXT_MODEL_FEATURES`` in any order.
    Returns:
        A float64 array of shape (n, len(feature_names)), columns in that order.
    Raises:
        ValueError: an unknown feature name, or inputs of different lengths.
    """
    names = tuple(feature_names)
    if names == FEATURE_NAMES:
        return feature_matrix(systolic, diastolic)
    unknown = [name for name in names if name not in _COLUMN]
    if unknown:
        raise ValueError(f"unknown feature(s): {', '.join(unknown)}")
    full = np.hstack([feature_matrix(systolic, diastolic), context_feature_matrix(systolic, diastolic, context)])
    if names == CONTEXT_MODEL_FEATURES:
        return full
    return full[:, [_COLUMN[name] for name in names]]


_COLUMN = {name: index for index, name in enumerate(CONTEXT_MODEL_FEATURES)}


def uses_context(feature_names: Sequence[str]) -> bool:
    """Whether a model with these features needs the readings' context."""
    return any(name in CONTEXT_FEATURE_NAMES for name in feature_names)


def feature_set_name(feature_names: Sequence[str]) -> str:
    """``single-reading``, ``context``, or ``custom`` for any other list."""
    names = tuple(feature_names)
    return next((name for name, features in FEATURE_SETS.items() if features == names), "custom")


def feature_names_for_width(width: int) -> tuple[str, ...]:
    """The feature set of a model known only by its input width (a joblib file has no
    signature): the context set at its width, else the single-reading set."""
    return CONTEXT_MODEL_FEATURES if width == len(CONTEXT_MODEL_FEATURES) else FEATURE_NAMES
