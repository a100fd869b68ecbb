"""The one definition of the model's input features, shared by training and serving.

A reading is anomalous when it is far from normal on *either* side (too high or too
low), so a linear model on raw (systolic, diastolic) cannot separate the classes: the
logit would have to rise at both ends. The features below give a logistic regression
what it needs to say "far from normal, whichever way":

==============================  ==============================================================
feature                         meaning (mmHg unless stated)
==============================  ==============================================================
systolic_mm_hg                  the reading as measured
diastolic_mm_hg                 the reading as measured
pulse_pressure_mm_hg            systolic - diastolic
mean_arterial_pressure_mm_hg    diastolic + pulse pressure / 3
systolic_above_high_mm_hg       max(systolic - 140, 0): hinge above the systolic high limit
systolic_below_low_mm_hg        max(90 - systolic, 0): hinge below the systolic low limit
diastolic_above_high_mm_hg      max(diastolic - 90, 0)
diastolic_below_low_mm_hg       max(60 - diastolic, 0)
worst_exceedance_mm_hg          signed distance to the normal box: the largest of the four
                                (limit - value) excesses; < 0 inside, > 0 outside, so one
                                coefficient expresses "outside on any side"
squared_deviation               ((s - 115) / 25)^2 + ((d - 75) / 15)^2: squared, scaled
                                distance from a reference centre (unitless)
==============================  ==============================================================

The limits are fixed clinical *reference* constants (the brief's 140/90 and 90/60), not
the configurable alert thresholds in ``Settings``: a served model must see the same
features whatever thresholds a deployment configures, or retraining would be needed
each time an operator tunes the rules.

``feature_matrix`` is pure NumPy (no pandas), vectorised, and cheap enough for the
consumer's hot path (well under 1 µs per row on batches).
"""

from __future__ import annotations

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


def feature_matrix(systolic: np.ndarray, diastolic: np.ndarray) -> np.ndarray:
    """Build the model's feature matrix from systolic and diastolic readings.

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
    s = np.atleast_1d(np.asarray(systolic, dtype=np.float64))
    d = np.atleast_1d(np.asarray(diastolic, dtype=np.float64))
    if s.ndim != 1 or d.ndim != 1 or s.shape != d.shape:
        raise ValueError(f"systolic and diastolic must be 1-D arrays of equal length, got shapes {s.shape} and {d.shape}")
    out = np.empty((s.shape[0], len(FEATURE_NAMES)), dtype=np.float64)
    out[:, 0] = s
    out[:, 1] = d
    np.subtract(s, d, out=out[:, 2])
    np.add(d, out[:, 2] / 3.0, out=out[:, 3])
    # Signed excesses over each limit first (positive = outside), then hinge them.
    np.subtract(s, SYSTOLIC_HIGH_MM_HG, out=out[:, 4])
    np.subtract(SYSTOLIC_LOW_MM_HG, s, out=out[:, 5])
    np.subtract(d, DIASTOLIC_HIGH_MM_HG, out=out[:, 6])
    np.subtract(DIASTOLIC_LOW_MM_HG, d, out=out[:, 7])
    np.max(out[:, 4:8], axis=1, out=out[:, 8])
    np.maximum(out[:, 4:8], 0.0, out=out[:, 4:8])
    ds = (s - SYSTOLIC_CENTRE_MM_HG) / SYSTOLIC_SCALE_MM_HG
    dd = (d - DIASTOLIC_CENTRE_MM_HG) / DIASTOLIC_SCALE_MM_HG
    np.add(ds * ds, dd * dd, out=out[:, 9])
    return out
