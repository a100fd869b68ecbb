"""Clinical thresholds and AHA 2017 categories: every boundary, scalar and vectorised forms."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bp_core.errors import UsageError
from bp_core.rules import (ANOMALY_TYPE_SETS, ANOMALY_TYPES, CATEGORIES, DEFAULT_THRESHOLDS, Thresholds,
                           anomaly_type_codes, anomaly_types, category, category_codes, is_rule_anomaly,
                           rule_anomaly_mask)
from bp_core.settings import Settings

# Readings the parser lets through: 0 < diastolic < systolic <= 300, diastolic <= 200.
systolic_values = st.one_of(st.integers(1, 300).map(float), st.floats(0.5, 300, allow_nan=False))


@st.composite
def readings(draw) -> tuple[float, float]:
    systolic = draw(systolic_values)
    diastolic = draw(st.one_of(st.integers(1, 200).map(float), st.floats(0.1, 200, allow_nan=False))
                     .filter(lambda d: d < systolic))
    return systolic, diastolic


@st.composite
def thresholds(draw) -> Thresholds:
    systolic_low = draw(st.floats(40, 150))
    diastolic_low = draw(st.floats(20, 100))
    return Thresholds(systolic_high=draw(st.floats(systolic_low + 1, 260)), systolic_low=systolic_low,
                      diastolic_high=draw(st.floats(diastolic_low + 1, 160)), diastolic_low=diastolic_low)


# --------------------------------------------------------------------------- categories


@pytest.mark.parametrize("systolic, diastolic, expected", [
    # systolic boundaries, diastolic held normal (70)
    (119, 70, "normal"), (120, 70, "elevated"),
    (129, 70, "elevated"), (130, 70, "hypertension_stage_1"),
    (139, 70, "hypertension_stage_1"), (140, 70, "hypertension_stage_2"),
    (180, 70, "hypertension_stage_2"), (181, 70, "hypertensive_crisis"),
    (90, 70, "normal"), (89, 70, "hypotension"),
    # diastolic boundaries, systolic held normal (110) or high enough to allow the value
    (110, 79, "normal"), (110, 80, "hypertension_stage_1"),
    (125, 79, "elevated"), (125, 80, "hypertension_stage_1"),
    (110, 89, "hypertension_stage_1"), (110, 90, "hypertension_stage_2"),
    (150, 120, "hypertension_stage_2"), (150, 121, "hypertensive_crisis"),
    (110, 60, "normal"), (110, 59, "hypotension"),
    # precedence
    (150, 55, "hypertension_stage_2"),    # hypertensive categories before hypotension
    (185, 50, "hypertensive_crisis"),
    (85, 82, "hypertension_stage_1"),
    (125, 55, "hypotension"),              # hypotension before elevated
    (85, 55, "hypotension"),
    # decimals fall in the band below the next bound
    (119.9, 79.9, "normal"), (129.5, 70, "elevated"), (139.9, 89.9, "hypertension_stage_1"),
    (180.1, 70, "hypertensive_crisis"), (89.9, 70, "hypotension"), (110, 59.9, "hypotension"),
])
def test_category_boundaries(systolic, diastolic, expected):
    assert category(systolic, diastolic) == expected
    assert category_codes(np.array([systolic]), np.array([diastolic]))[0] == expected


@given(readings())
def test_category_is_always_one_of_the_names(reading):
    assert category(*reading) in CATEGORIES


@given(st.lists(readings(), min_size=1, max_size=50))
def test_vectorised_category_matches_scalar(batch):
    systolic = np.array([s for s, _ in batch])
    diastolic = np.array([d for _, d in batch])
    assert category_codes(systolic, diastolic).tolist() == [category(s, d) for s, d in batch]


@given(readings())
def test_crisis_exactly_when_above_180_or_120(reading):
    systolic, diastolic = reading
    assert (category(systolic, diastolic) == "hypertensive_crisis") == (systolic > 180 or diastolic > 120)


@given(readings())
def test_normal_exactly_when_aha_normal_and_not_low(reading):
    systolic, diastolic = reading
    expected = 90 <= systolic < 120 and 60 <= diastolic < 80
    assert (category(systolic, diastolic) == "normal") == expected


def test_category_codes_of_an_empty_batch():
    assert category_codes(np.array([]), np.array([])).shape == (0,)


# --------------------------------------------------------------------------- anomaly thresholds


@pytest.mark.parametrize("systolic, diastolic, expected", [
    (140, 75, []), (141, 75, ["systolic_high"]),
    (90, 75, []), (89, 75, ["systolic_low"]),
    (120, 90, []), (120, 91, ["diastolic_high"]),
    (120, 60, []), (120, 59, ["diastolic_low"]),
    (140.5, 90.5, ["systolic_high", "diastolic_high"]),
    (85, 55, ["systolic_low", "diastolic_low"]),
    (150, 55, ["systolic_high", "diastolic_low"]),
    (120, 80, []),
])
def test_default_threshold_boundaries(systolic, diastolic, expected):
    assert anomaly_types(systolic, diastolic) == expected
    assert is_rule_anomaly(systolic, diastolic) == bool(expected)
    assert rule_anomaly_mask(np.array([systolic]), np.array([diastolic]))[0] == bool(expected)


def test_defaults_are_the_brief_thresholds():
    assert DEFAULT_THRESHOLDS == Thresholds(140.0, 90.0, 90.0, 60.0)
    assert Thresholds.from_settings(Settings()) == DEFAULT_THRESHOLDS


def test_thresholds_from_settings_are_configurable():
    custom = Settings().with_(systolic_high=130.0, systolic_low=100.0, diastolic_high=85.0, diastolic_low=65.0)
    limits = Thresholds.from_settings(custom)
    assert anomaly_types(131, 86, limits) == ["systolic_high", "diastolic_high"]
    assert anomaly_types(130, 85, limits) == []
    assert anomaly_types(99, 64, limits) == ["systolic_low", "diastolic_low"]


@pytest.mark.parametrize("changes", [{"systolic_low": 140.0}, {"diastolic_high": 50.0}])
def test_inverted_thresholds_are_a_usage_error(changes):
    with pytest.raises(UsageError, match="must be below"):
        Thresholds(**changes)


@given(readings(), thresholds())
def test_anomaly_types_follow_strict_inequalities(reading, limits):
    systolic, diastolic = reading
    expected = [name for name, hit in zip(ANOMALY_TYPES, (
        systolic > limits.systolic_high, systolic < limits.systolic_low,
        diastolic > limits.diastolic_high, diastolic < limits.diastolic_low)) if hit]
    assert anomaly_types(systolic, diastolic, limits) == expected
    assert is_rule_anomaly(systolic, diastolic, limits) == bool(expected)


@given(readings(), thresholds())
def test_a_reading_exactly_on_a_threshold_is_not_an_anomaly(reading, limits):
    _, diastolic = reading
    for systolic in (limits.systolic_high, limits.systolic_low):
        assert "systolic_high" not in anomaly_types(systolic, diastolic, limits)
        assert "systolic_low" not in anomaly_types(systolic, diastolic, limits)


@settings(max_examples=50)
@given(st.lists(readings(), min_size=1, max_size=50), thresholds())
def test_vectorised_mask_matches_scalar(batch, limits):
    systolic = np.array([s for s, _ in batch])
    diastolic = np.array([d for _, d in batch])
    mask = rule_anomaly_mask(systolic, diastolic, limits)
    assert mask.dtype == bool
    assert mask.tolist() == [is_rule_anomaly(s, d, limits) for s, d in batch]


@settings(max_examples=50)
@given(st.lists(readings(), min_size=1, max_size=50), thresholds())
def test_vectorised_anomaly_types_match_scalar(batch, limits):
    systolic = np.array([s for s, _ in batch])
    diastolic = np.array([d for _, d in batch])
    codes = anomaly_type_codes(systolic, diastolic, limits)
    assert [list(ANOMALY_TYPE_SETS[code]) for code in codes.tolist()] == [anomaly_types(s, d, limits) for s, d in batch]


def test_anomaly_type_sets_cover_every_combination_once():
    assert ANOMALY_TYPE_SETS[0] == ()
    assert ANOMALY_TYPE_SETS[63] == tuple(ANOMALY_TYPES)
    assert len(set(ANOMALY_TYPE_SETS)) == 64
    assert ANOMALY_TYPES[4:] == ("rise_from_baseline", "drop_from_baseline")


# --------------------------------------------------------------------------- context anomalies


@pytest.mark.parametrize("systolic, diastolic, expected", [
    (139, 80, []), (140, 80, ["rise_from_baseline"]),          # baseline 120/80: +20 systolic, inclusive
    (120, 89, []), (120, 90, ["rise_from_baseline"]),          # +10 diastolic (90 is not diastolic_high)
    (101, 80, []), (100, 80, ["drop_from_baseline"]),          # -20 systolic
    (120, 71, []), (120, 70, ["drop_from_baseline"]),          # -10 diastolic
    (140, 70, ["rise_from_baseline", "drop_from_baseline"]),   # pulse pressure widening: both
    (145, 80, ["systolic_high", "rise_from_baseline"]),
    (99.5, 80, ["drop_from_baseline"]),
])
def test_context_boundaries_against_a_baseline_of_120_80(systolic, diastolic, expected):
    assert anomaly_types(systolic, diastolic, DEFAULT_THRESHOLDS, 120.0, 80.0) == expected
    assert is_rule_anomaly(systolic, diastolic, DEFAULT_THRESHOLDS, 120.0, 80.0) == bool(expected)
    codes = anomaly_type_codes(np.array([systolic]), np.array([diastolic]), DEFAULT_THRESHOLDS,
                               np.array([120.0]), np.array([80.0]))
    assert list(ANOMALY_TYPE_SETS[int(codes[0])]) == expected


def test_a_jump_inside_the_normal_box_is_a_rule_anomaly_with_a_baseline_only():
    assert anomaly_types(135, 85) == []
    assert anomaly_types(135, 85, DEFAULT_THRESHOLDS, 110.0, 72.0) == ["rise_from_baseline"]
    assert anomaly_types(135, 85, DEFAULT_THRESHOLDS, None, None) == []
    assert anomaly_types(135, 85, DEFAULT_THRESHOLDS, float("nan"), float("nan")) == []
    mask = rule_anomaly_mask(np.array([135.0, 135.0]), np.array([85.0, 85.0]), DEFAULT_THRESHOLDS,
                             np.array([110.0, np.nan]), np.array([72.0, np.nan]))
    assert mask.tolist() == [True, False]


def test_baseline_deltas_come_from_settings():
    limits = Thresholds.from_settings(Settings().with_(baseline_systolic_delta=30.0, baseline_diastolic_delta=15.0))
    assert anomaly_types(149, 94, limits, 120.0, 80.0) == ["systolic_high", "diastolic_high"]
    assert anomaly_types(150, 80, limits, 120.0, 80.0) == ["systolic_high", "rise_from_baseline"]
    assert anomaly_types(120, 65, limits, 120.0, 80.0) == ["drop_from_baseline"]
    assert Thresholds.from_settings(Settings.from_env({"BP_BASELINE_SYSTOLIC_DELTA": "25"})).baseline_systolic_delta == 25


@pytest.mark.parametrize("changes", [{"baseline_systolic_delta": 0.0}, {"baseline_diastolic_delta": -5.0}])
def test_a_delta_that_is_not_positive_is_a_usage_error(changes):
    with pytest.raises(UsageError, match="must be positive"):
        Thresholds(**changes)


baselines = st.one_of(st.just(float("nan")), st.floats(40, 250, allow_nan=False))


@settings(max_examples=80)
@given(st.lists(st.tuples(readings(), baselines, baselines), min_size=1, max_size=40), thresholds())
def test_vectorised_context_types_match_scalar(batch, limits):
    systolic = np.array([s for (s, _), _, _ in batch])
    diastolic = np.array([d for (_, d), _, _ in batch])
    baseline_s = np.array([b for _, b, _ in batch])
    baseline_d = np.array([b for _, _, b in batch])
    codes = anomaly_type_codes(systolic, diastolic, limits, baseline_s, baseline_d)
    expected = [anomaly_types(s, d, limits, bs, bd) for (s, d), bs, bd in batch]
    assert [list(ANOMALY_TYPE_SETS[code]) for code in codes.tolist()] == expected
    assert rule_anomaly_mask(systolic, diastolic, limits, baseline_s, baseline_d).tolist() == [bool(t) for t in expected]
