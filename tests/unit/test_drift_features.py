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
