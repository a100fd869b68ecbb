"""bp_core.features: shape, names, values, two-sidedness, speed."""

from __future__ import annotations


import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bp_core.features import FEATURE_NAMES, feature_matrix
from tests.unit._frames import readings_frame, true_label


def test_shape_dtype_and_names():
    features = feature_matrix(np.array([120, 150, 85]), np.array([80, 95, 55]))
    assert features.shape == (3, len(FEATURE_NAMES))
    assert features.dtype == np.float64
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    assert 6 <= len(FEATURE_NAMES) <= 10


def test_values_of_one_reading():
    row = dict(zip(FEATURE_NAMES, feature_matrix(np.array([150.0]), np.array([95.0]))[0]))
    assert row["systolic_mm_hg"] == 150 and row["diastolic_mm_hg"] == 95
    assert row["pulse_pressure_mm_hg"] == 55
    assert row["mean_arterial_pressure_mm_hg"] == pytest.approx(95 + 55 / 3)
    assert row["systolic_above_high_mm_hg"] == 10 and row["systolic_below_low_mm_hg"] == 0
    assert row["diastolic_above_high_mm_hg"] == 5 and row["diastolic_below_low_mm_hg"] == 0
    assert row["worst_exceedance_mm_hg"] == 10
    assert row["squared_deviation"] == pytest.approx((35 / 25) ** 2 + (20 / 15) ** 2)


def test_worst_exceedance_is_negative_inside_and_positive_outside_on_both_sides():
    systolic = np.array([120.0, 85.0, 145.0, 120.0, 120.0])
    diastolic = np.array([75.0, 70.0, 70.0, 55.0, 95.0])
    worst = feature_matrix(systolic, diastolic)[:, FEATURE_NAMES.index("worst_exceedance_mm_hg")]
    assert worst[0] < 0
    assert np.all(worst[1:] > 0)
    np.testing.assert_allclose(worst, [-15.0, 5.0, 5.0, 5.0, 5.0])


def test_accepts_scalars_ints_and_leaves_inputs_alone():
    systolic = np.array([120, 130], dtype=np.int64)
    diastolic = np.array([80, 85], dtype=np.int64)
    feature_matrix(systolic, diastolic)
    assert systolic.tolist() == [120, 130] and systolic.dtype == np.int64
    assert feature_matrix(120, 80).shape == (1, len(FEATURE_NAMES))


@pytest.mark.parametrize("systolic, diastolic", [
    (np.array([120.0, 130.0]), np.array([80.0])),
    (np.ones((2, 2)), np.ones((2, 2))),
])
def test_rejects_mismatched_inputs(systolic, diastolic):
    with pytest.raises(ValueError, match="1-D arrays of equal length"):
        feature_matrix(systolic, diastolic)


def test_empty_batch():
    assert feature_matrix(np.array([]), np.array([])).shape == (0, len(FEATURE_NAMES))


def _grid(seed: int = 0, n: int = 20_000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(60, 220, n), rng.uniform(30, 140, n)


def _recall(model, features: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> float:
    predicted = model.predict(features[mask])
    return float(np.mean(predicted[labels[mask] == 1] == 1))


def test_logistic_regression_on_the_features_separates_high_and_low():
    systolic, diastolic = _grid()
    labels = true_label(systolic, diastolic)
    features = feature_matrix(systolic, diastolic)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(features, labels)

    test_sys, test_dia = _grid(seed=1)
    test_labels = true_label(test_sys, test_dia)
    test_features = feature_matrix(test_sys, test_dia)
    high = (test_sys > 145) | (test_dia > 95)
    low = (test_sys < 85) | (test_dia < 55)
    inside = (test_sys > 95) & (test_sys < 135) & (test_dia > 65) & (test_dia < 85)
    assert _recall(model, test_features, test_labels, high) > 0.98
    assert _recall(model, test_features, test_labels, low) > 0.98
    assert np.mean(model.predict(test_features[inside]) == 0) > 0.98


def test_raw_values_alone_cannot_separate_both_sides():
    """Why the hinge features exist: a linear model on (sys, dia) misses one side."""
    systolic, diastolic = _grid()
    labels = true_label(systolic, diastolic)
    raw = np.column_stack([systolic, diastolic])
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(raw, labels)
    high = (systolic > 145) | (diastolic > 95)
    low = (systolic < 85) | (diastolic < 55)
    inside = (systolic > 95) & (systolic < 135) & (diastolic > 65) & (diastolic < 85)
    specificity = float(np.mean(model.predict(raw[inside]) == 0))
    assert min(_recall(model, raw, labels, high), _recall(model, raw, labels, low), specificity) < 0.9


def test_noisy_readings_frame_is_learnable():
    frame = readings_frame(patients=60, readings=6000, seed=3)
    features = feature_matrix(frame["systolic_mm_hg"].to_numpy(), frame["diastolic_mm_hg"].to_numpy())
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(features, frame["label"])
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(frame["label"], model.predict_proba(features)[:, 1]) > 0.9

