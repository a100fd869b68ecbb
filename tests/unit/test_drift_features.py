"""The drift check's features of a context model: made from the context the sinks store,
exactly as the model's own matrix (``bp_core.features.model_matrix``) makes them."""

from __future__ import annotations

import numpy as np

from bp_core.context import context_of_frame
from bp_core.drift.reference import CONTEXT_FIELDS, feature_columns, input_fields
from bp_core.features import CONTEXT_MODEL_FEATURES, FEATURE_NAMES, model_matrix
from bp_core.simulation.cohort import Cohort


def test_a_context_model_reads_the_stored_context_fields_not_its_feature_names():
    assert input_fields(list(FEATURE_NAMES)) == ["systolic", "diastolic"]
    assert input_fields(list(CONTEXT_MODEL_FEATURES)) == ["systolic", "diastolic", *CONTEXT_FIELDS]
    assert input_fields([*FEATURE_NAMES, "home_average_systolic"])[-1] == "home_average_systolic"


def test_context_features_are_the_models_own_from_the_stored_fields():
    frame = Cohort(20, 3).readings_frame(400)  # 20 readings each: most have a 7-day baseline, the first ones not
    context = context_of_frame(frame)
    systolic, diastolic = frame["systolic_mm_hg"].to_numpy(np.float64), frame["diastolic_mm_hg"].to_numpy(np.float64)
    inputs = {"systolic": systolic, "diastolic": diastolic, **{name: getattr(context, name) for name in CONTEXT_FIELDS}}
    assert np.isnan(inputs["baseline_systolic"]).any() and not np.isnan(inputs["baseline_systolic"]).all()

    columns = feature_columns(list(CONTEXT_MODEL_FEATURES), inputs)

    expected = model_matrix(systolic, diastolic, context, CONTEXT_MODEL_FEATURES)
    assert list(columns) == list(CONTEXT_MODEL_FEATURES)
    np.testing.assert_array_equal(np.column_stack(list(columns.values())), expected)
    no_baseline = np.isnan(inputs["baseline_systolic"])
    assert (columns["has_baseline"][no_baseline] == 0).all() and (columns["has_baseline"][~no_baseline] == 1).all()
    assert np.isfinite(np.column_stack(list(columns.values()))).all(), "what the model sees has no gaps"


def test_history_stand_ins_are_not_compared():
    from bp_core.drift.reference import compared_columns, compared_features

    nan = np.nan
    inputs = {"systolic": np.array([150.0, 150.0, 150.0]), "diastolic": np.array([95.0, 95.0, 95.0]),
              "baseline_systolic": np.array([nan, nan, 140.0]), "baseline_diastolic": np.array([nan, nan, 90.0]),
              "arv_systolic": np.array([nan, 4.0, 5.0])}
    columns = compared_columns(feature_columns(list(CONTEXT_MODEL_FEATURES), inputs), inputs)

    compared = compared_features(list(CONTEXT_MODEL_FEATURES))
    assert not {"has_baseline", "systolic_minus_baseline_mm_hg", "arv_systolic_mm_hg"} & set(compared)
    assert {"baseline_systolic_above_high_mm_hg", "midpoint_squared_deviation"} <= set(compared)
    assert compared_features(list(FEATURE_NAMES)) == list(FEATURE_NAMES)
    np.testing.assert_array_equal(columns["baseline_systolic_above_high_mm_hg"], [nan, nan, 0.0])
    np.testing.assert_array_equal(columns["midpoint_systolic_above_high_mm_hg"], [nan, nan, 5.0])
    np.testing.assert_array_equal(columns["systolic_mm_hg"], [150.0, 150.0, 150.0])


def test_a_column_known_for_some_readings_is_judged_by_their_noise():
    from bp_core.drift.statistics import Reference, Sample, compare_column, spreads_by_patient

    rng = np.random.default_rng(0)
    codes = np.repeat(np.arange(500), 20)
    values = rng.normal(0, 1, 500)[codes] + rng.normal(0, 1, len(codes))
    reference = Reference(Sample({"x": values}, np.ones(len(values)), np.zeros(len(values)), 500),
                          {"x": spreads_by_patient(values, codes)})
    live_values = rng.normal(0, 1, 2000)[np.repeat(np.arange(2000), 5)]
    sparse = live_values.copy()
    sparse[50:] = np.nan  # known for 50 readings of the 10,000 only

    full = compare_column("x", Sample({"x": live_values}, np.ones(10_000), np.zeros(10_000), 2000), reference)
    few = compare_column("x", Sample({"x": sparse}, np.ones(10_000), np.zeros(10_000), 2000), reference)
    assert few.threshold > 2 * full.threshold, "50 readings carry the noise of 50, not of 10,000"
