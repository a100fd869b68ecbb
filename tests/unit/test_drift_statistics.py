"""Drift statistics, the report's shape and the monitor's figures: pure logic, no services."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from bp_core.drift.check import DriftReport, SegmentReport, parse_duration, utc
from bp_core.drift.monitor import MonitorOutcome, metrics_of, registry_of
from bp_core.drift.statistics import (
    ALERT_RATE, EFFECT_THRESHOLD, Comparison, Reference, Sample, Spread, collapse, compare, compare_alert_rate,
    compare_column, spreads_by_patient, wasserstein_normed,
)
from bp_core.errors import UsageError


def sample(values, patients: int, alerts=None) -> Sample:
    values = np.asarray(values, dtype=np.float64)
    alerts = np.zeros(len(values)) if alerts is None else np.asarray(alerts, dtype=np.float64)
    return Sample({"x": values}, np.ones(len(values)), alerts, patients)


def reference(values, patient_codes, alerts=None) -> Reference:
    s = sample(values, int(np.max(patient_codes)) + 1, alerts)
    return Reference(s, {"x": spreads_by_patient(s.columns["x"], np.asarray(patient_codes)),
                         ALERT_RATE: spreads_by_patient(s.alerts, np.asarray(patient_codes))})


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("15m", 900), ("24h", 86400), ("7d", 604800),
                                           ("2w", 1209600), (" 3h ", 10800)])
def test_durations(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "24", "h", "0h", "-3h", "1.5h", "3 hours", "yesterday"])
def test_bad_durations(text):
    with pytest.raises(UsageError, match="not a duration"):
        parse_duration(text)


def test_utc_makes_plain_aware_datetimes():
    naive = datetime(2026, 3, 2, 10, 0)
    assert utc(naive) == datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)
    paris = datetime(2026, 3, 2, 11, 0, tzinfo=timezone(timedelta(hours=1)))
    assert utc(paris).tzinfo is timezone.utc and utc(paris) == paris


def test_a_shift_scores_its_size_in_reference_sds():
    rng = np.random.default_rng(1)
    ref = rng.normal(120, 20, 50_000)
    live = ref + 5.0
    score = wasserstein_normed(collapse(live, np.ones(len(live))), collapse(ref, np.ones(len(ref))), ref.std())
    assert score == pytest.approx(5.0 / ref.std(), rel=1e-9)


def test_weights_count_as_repeated_readings():
    repeated = np.array([1.0, 1.0, 1.0, 4.0])
    weighted = (np.array([1.0, 4.0]), np.array([3.0, 1.0]))
    other = (np.array([2.0]), np.array([1.0]))
    assert wasserstein_normed(collapse(repeated, np.ones(4)), other, 1.0) == pytest.approx(
        wasserstein_normed(weighted, other, 1.0))


def test_unknown_values_are_left_out_and_an_empty_side_scores_nan():
    values, weights = collapse(np.array([np.nan, 2.0, 2.0, np.nan]), np.ones(4))
    assert values.tolist() == [2.0] and weights.tolist() == [2.0]
    assert np.isnan(wasserstein_normed(collapse(np.array([np.nan]), np.ones(1)), (values, weights), 1.0))


def test_a_segment_collapses_as_if_it_were_sorted_afresh():
    rng = np.random.default_rng(7)
    values = np.round(rng.normal(130, 15, 5000), 1)
    values[rng.integers(0, 5000, 200)] = np.nan
    whole = Sample({"x": values}, rng.integers(1, 4, 5000).astype(np.float64), np.zeros(5000), 50)
    whole.distinct("x")  # sorted once, on the whole sample
    mask = rng.random(5000) < 0.3
    segment = whole.where(mask, 15)
    fresh = Sample({"x": values[mask]}, whole.weights[mask], np.zeros(int(mask.sum())), 15)
    inherited, recomputed = segment.distinct("x"), fresh.distinct("x")
    assert np.array_equal(inherited[0], recomputed[0]) and np.array_equal(inherited[1], recomputed[1])
    distinct, inverse = np.unique(values[mask][np.isfinite(values[mask])], return_inverse=True)
    assert np.array_equal(inherited[0], distinct)
    assert np.allclose(inherited[1], np.bincount(inverse, weights=whole.weights[mask][np.isfinite(values[mask])]))


def test_spreads_split_between_and_within_patients():
    # Two patients at 100 and 140, each reading +-5 around their level.
    values = np.array([95, 105, 95, 105, 135, 145, 135, 145], dtype=np.float64)
    spread = spreads_by_patient(values, np.array([0, 0, 0, 0, 1, 1, 1, 1]))
    assert spread.between_sd == pytest.approx(20.0)
    assert spread.within_sd == pytest.approx(5.0)
    assert spread.total_sd == pytest.approx(np.sqrt(20.0 ** 2 + 5.0 ** 2))


def test_the_noise_floor_raises_the_threshold_for_few_patients():
    rng = np.random.default_rng(2)
    levels = rng.normal(120, 19, 500)
    codes = np.repeat(np.arange(500), 100)
    ref = reference(levels[codes] + rng.normal(0, 7, len(codes)), codes)
    few = sample(rng.normal(120, 20, 5000), patients=20)
    many = sample(rng.normal(120, 20, 200_000), patients=100_000)
    assert compare_column("x", few, ref).threshold > 0.5, "20 patients: the patient mix dominates"
    assert compare_column("x", many, ref).threshold < 0.2
    assert compare_column("x", many, ref).threshold >= EFFECT_THRESHOLD


def test_the_effect_threshold_applies_to_large_samples_on_both_sides():
    spread = Spread(total_sd=20.0, between_sd=19.0, within_sd=6.0)
    big = sample(np.zeros(10), patients=10**9)
    big.weights = np.full(10, 1e9)
    ref = Reference(big, {"x": spread})
    ref.sample.columns["x"] = np.arange(10, dtype=np.float64)
    live = Sample({"x": np.arange(10, dtype=np.float64) + 4.0}, np.full(10, 1e9), np.zeros(10), 10**9)
    result = compare_column("x", live, ref)
    assert result.threshold == EFFECT_THRESHOLD
    assert result.score == pytest.approx(4.0 / 20.0) and result.drift


def test_alert_rate_is_a_relative_difference():
    codes = np.repeat(np.arange(1000), 50)
    alerts = (np.arange(len(codes)) % 5 == 0).astype(float)  # 20 %, the same in every patient
    ref = reference(np.zeros(len(codes)), codes, alerts)
    live = sample(np.zeros(100_000), patients=50_000, alerts=(np.arange(100_000) % 4 == 0))  # 25 %
    result = compare_alert_rate(live, ref)
    assert result.statistic == "relative_difference"
    assert result.score == pytest.approx(0.25)
    assert result.drift and result.threshold == pytest.approx(0.10)


def test_compare_lists_each_column_then_the_alert_rate():
    codes = np.repeat(np.arange(100), 10)
    ref = reference(np.random.default_rng(3).normal(0, 1, 1000), codes)
    assert list(compare(sample(np.zeros(10), 10), ref, ["x"])) == ["x", ALERT_RATE]


def report(drift_in_fleet: bool) -> DriftReport:
    calm = Comparison("wasserstein_normed", 0.02, 0.1, False)
    moved = Comparison("wasserstein_normed", 0.7, 0.3, True)
    return DriftReport(
        start=datetime(2026, 3, 1, 10, tzinfo=timezone.utc), end=datetime(2026, 3, 2, 10, tzinfo=timezone.utc),
        readings=5000, patients=1000, model_name="m", model_version="3", dataset_digest="abc",
        dataset_source="/data/training/x", features={"systolic_mm_hg": calm, ALERT_RATE: calm},
        segments={"cuff-a": SegmentReport(4000, 800, {"systolic_mm_hg": calm}, False),
                  "cuff-c": SegmentReport(1000, 200, {"systolic_mm_hg": moved if drift_in_fleet else calm}, False)})


def test_a_fleet_that_drifted_makes_the_report_drift():
    body = report(drift_in_fleet=True).as_dict()
    assert body["drift"] is True
    assert body["window"] == {"start": "2026-03-01T10:00:00Z", "end": "2026-03-02T10:00:00Z", "readings": 5000}
    assert body["reference"] == {"model_version": "3", "dataset_digest": "abc"}
    assert body["features"]["systolic_mm_hg"] == {"statistic": "wasserstein_normed", "score": 0.02,
                                                  "threshold": 0.1, "drift": False}
    assert body["segments"]["cuff-c"]["drift"] is True and body["segments"]["cuff-a"]["drift"] is False
    assert report(drift_in_fleet=True).drifted() == ["cuff-c/systolic_mm_hg"]
    assert report(drift_in_fleet=False).as_dict()["drift"] is False


def test_the_table_names_the_window_and_marks_drift():
    text = report(drift_in_fleet=True).table()
    assert "5,000 readings, 1,000 patients" in text
    assert "drift    YES: cuff-c/systolic_mm_hg" in text
    assert "0.700/0.30*" in text


def test_monitor_figures():
    body = report(drift_in_fleet=True).as_dict()
    metrics = metrics_of(body)
    assert metrics["drift"] == 1.0 and metrics["readings"] == 5000
    assert metrics["segment.cuff-c.systolic_mm_hg.score"] == 0.7
    assert metrics["segment.cuff-c.drift"] == 1.0
    outcome = MonitorOutcome(compared=True, drift=True, readings=5000, report=body)
    from prometheus_client import generate_latest

    text = generate_latest(registry_of(outcome, datetime(2026, 3, 2, tzinfo=timezone.utc))).decode()
    assert "bp_drift_detected 1.0" in text
    assert 'bp_drift_score{feature="systolic_mm_hg",segment="cuff-c"} 0.7' in text
    assert 'bp_drift_segment_detected{segment="cuff-c"} 1.0' in text
    cannot = generate_latest(registry_of(MonitorOutcome(compared=False), datetime.now(timezone.utc))).decode()
    assert "bp_drift_can_compare 0.0" in cannot and "bp_drift_score" not in cannot


def test_archive_rows_group_by_every_column_nan_included():
    from bp_core.drift.live import _group

    fleet = np.array([0, 0, 1, 0, 0])
    systolic = np.array([120.0, 120.0, 120.0, 121.0, 120.0])
    context = np.array([np.nan, np.nan, np.nan, 5.0, 5.0])
    first, counts = _group([fleet, systolic, context])
    groups = {(int(fleet[i]), float(systolic[i]), str(context[i]), int(n)) for i, n in zip(first, counts)}
    assert groups == {(0, 120.0, "nan", 2), (0, 120.0, "5.0", 1), (0, 121.0, "5.0", 1), (1, 120.0, "nan", 1)}
    assert sum(counts) == 5


def test_grouping_many_distinct_columns_does_not_overflow():
    from bp_core.drift.live import _group

    rng = np.random.default_rng(4)
    columns = [rng.random(50_000) for _ in range(6)]  # 50,000^6 distinct combinations > 2^63
    columns = [np.concatenate([c, c[:10]]) for c in columns]  # ten rows repeated
    first, counts = _group(columns)
    assert len(first) == 50_000 and counts.sum() == 50_010 and sorted(counts)[-10:] == [2] * 10
