"""bp_core.features: shape, names, values, two-sidedness, context features."""

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



# --------------------------------------------------------------------------- context features


def _context(baseline_systolic, baseline_diastolic, arv):
    from bp_core.context import ContextColumns

    columns = ContextColumns.absent(len(baseline_systolic))
    return columns.__class__(**{**{name: getattr(columns, name) for name in columns.__dataclass_fields__},
                                "baseline_systolic": np.array(baseline_systolic, dtype=float),
                                "baseline_diastolic": np.array(baseline_diastolic, dtype=float),
                                "arv_systolic": np.array(arv, dtype=float)})


def test_context_feature_names_and_sets():
    from bp_core.features import (CONTEXT_FEATURE_NAMES, CONTEXT_MODEL_FEATURES, feature_names_for_width,
                                  feature_set_name, uses_context)

    assert CONTEXT_MODEL_FEATURES == FEATURE_NAMES + CONTEXT_FEATURE_NAMES
    assert len(set(CONTEXT_MODEL_FEATURES)) == len(CONTEXT_MODEL_FEATURES) == 26
    assert feature_set_name(FEATURE_NAMES) == "single-reading" and feature_set_name(CONTEXT_MODEL_FEATURES) == "context"
    assert feature_set_name(FEATURE_NAMES[:3]) == "custom"
    assert feature_names_for_width(26) == CONTEXT_MODEL_FEATURES and feature_names_for_width(10) == FEATURE_NAMES
    assert feature_names_for_width(1) == FEATURE_NAMES
    assert uses_context(CONTEXT_MODEL_FEATURES) and not uses_context(FEATURE_NAMES)


def test_context_features_with_and_without_a_baseline():
    from bp_core.features import CONTEXT_FEATURE_NAMES, LIMIT_FEATURE_NAMES, context_feature_matrix

    systolic, diastolic = np.array([150.0, 150.0]), np.array([95.0, 95.0])
    features = context_feature_matrix(systolic, diastolic, _context([130.0, np.nan], [85.0, np.nan], [6.0, np.nan]))
    with_baseline, without = (dict(zip(CONTEXT_FEATURE_NAMES, row)) for row in features)
    assert with_baseline["has_baseline"] == 1 and without["has_baseline"] == 0
    assert with_baseline["systolic_minus_baseline_mm_hg"] == 20 and with_baseline["diastolic_minus_baseline_mm_hg"] == 10
    assert with_baseline["baseline_worst_exceedance_mm_hg"] == -5      # 130/85: nearest limit 90 diastolic
    assert with_baseline["midpoint_systolic_above_high_mm_hg"] == 0    # midpoint 140/90: on the limits
    assert with_baseline["midpoint_worst_exceedance_mm_hg"] == 0
    assert with_baseline["arv_systolic_mm_hg"] == 6
    # Without a baseline the reading stands for itself: its own limit features, no deviation.
    reading = dict(zip(FEATURE_NAMES, feature_matrix(systolic[:1], diastolic[:1])[0]))
    for name in LIMIT_FEATURE_NAMES:
        assert without[f"baseline_{name}"] == reading[name] == without[f"midpoint_{name}"]
    assert without["systolic_minus_baseline_mm_hg"] == 0 and without["arv_systolic_mm_hg"] == 0
    np.testing.assert_array_equal(context_feature_matrix(systolic[1:], diastolic[1:], None), features[1:])


def test_model_matrix_builds_each_feature_set():
    from bp_core.features import CONTEXT_MODEL_FEATURES, model_matrix

    systolic, diastolic = np.array([120.0, 185.0, 85.0]), np.array([80.0, 125.0, 55.0])
    context = _context([118.0, 140.0, np.nan], [78.0, 90.0, np.nan], [4.0, 9.0, np.nan])
    np.testing.assert_array_equal(model_matrix(systolic, diastolic, context, FEATURE_NAMES),
                                  feature_matrix(systolic, diastolic))
    full = model_matrix(systolic, diastolic, context, CONTEXT_MODEL_FEATURES)
    assert full.shape == (3, 26)
    np.testing.assert_array_equal(full[:, :10], feature_matrix(systolic, diastolic))
    some = ("arv_systolic_mm_hg", "systolic_mm_hg", "has_baseline")
    np.testing.assert_array_equal(model_matrix(systolic, diastolic, context, some),
                                  full[:, [CONTEXT_MODEL_FEATURES.index(name) for name in some]])
    with pytest.raises(ValueError, match="unknown feature.*heart_rate"):
        model_matrix(systolic, diastolic, context, ("systolic_mm_hg", "heart_rate"))
    with pytest.raises(ValueError, match="length"):
        model_matrix(systolic[:2], diastolic[:2], context, CONTEXT_MODEL_FEATURES)


def test_context_helps_a_model_on_patients_with_history():
    """Why the context features exist: the baseline tells noise from a real change."""
    from sklearn.metrics import average_precision_score

    from bp_core.context import context_of_frame
    from bp_core.features import CONTEXT_MODEL_FEATURES, model_matrix

    frame = readings_frame(patients=80, readings=16_000, seed=11)
    context = context_of_frame(frame)
    systolic, diastolic = frame["systolic_mm_hg"].to_numpy(float), frame["diastolic_mm_hg"].to_numpy(float)
    labels = frame["label"].to_numpy()
    train = frame["patient_id"].map(lambda p: int(p.rsplit("-", 1)[1]) % 4 != 0).to_numpy()
    scores = {}
    for name, names in (("single", FEATURE_NAMES), ("context", CONTEXT_MODEL_FEATURES)):
        features = model_matrix(systolic, diastolic, context, names)
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(features[train], labels[train])
        scores[name] = average_precision_score(labels[~train], model.predict_proba(features[~train])[:, 1])
    assert scores["context"] > scores["single"] + 0.005, scores
