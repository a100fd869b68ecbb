"""bp_core.simulation.cohort: determinism, calibration (prevalences, trends, dip, rare crises), labels."""

from datetime import datetime, timezone

import numpy as np
import pytest

from bp_core.simulation.cohort import CONDITIONS, FRAME_COLUMNS, Cohort
from bp_core.rules import category_codes, rule_anomaly_mask


@pytest.fixture(scope="module")
def big():
    cohort = Cohort(4000, seed=11)
    return cohort, cohort.readings_frame(200_000)


def test_same_seed_same_output_and_chunking_is_invisible():
    a, b = Cohort(50, seed=3), Cohort(50, seed=3)
    fa = a.readings_frame(1000)
    assert fa.equals(b.readings_frame(1000))
    assert [p.name for p in a.patients] == [p.name for p in b.patients]
    tail = a.readings_frame(400, first=600).reset_index(drop=True)
    assert tail.equals(fa.iloc[600:].reset_index(drop=True))
    assert not fa.equals(Cohort(50, seed=4).readings_frame(1000))


def test_readings_iterator_matches_frame():
    cohort = Cohort(10, seed=5)
    frame = cohort.readings_frame(120)
    readings = list(cohort.readings(120, chunk=50))
    assert [r.observation_id for r in readings] == frame["observation_id"].tolist()
    assert [r.systolic_mm_hg for r in readings] == frame["systolic_mm_hg"].tolist()
    assert readings[0].effective.tzinfo is not None
    assert all(r.episode in (None, "hypertensive_crisis", "hypotensive_episode") for r in readings)


def test_frame_columns_and_ids():
    frame = Cohort(20, seed=1, start=datetime(2024, 6, 1, tzinfo=timezone.utc)).readings_frame(500)
    assert tuple(frame.columns) == FRAME_COLUMNS
    assert frame["observation_id"].is_unique
    assert frame["effective"].min() >= datetime(2024, 6, 1, tzinfo=timezone.utc)
    assert (frame["systolic_mm_hg"] > frame["diastolic_mm_hg"]).all()


def test_timestamps_increase_per_patient_and_patients_interleave():
    frame = Cohort(30, seed=2).readings_frame(3000)
    for _, group in frame.groupby("patient_id"):
        assert group["effective"].is_monotonic_increasing and group["effective"].is_unique
    assert frame["patient_id"].iloc[:30].is_unique


def test_prevalences(big):
    cohort, _ = big
    conditions = np.array([p.condition for p in cohort.patients])
    ages = np.array([p.age for p in cohort.patients])
    assert set(conditions) <= set(CONDITIONS)
    assert 0.40 <= (conditions == "hypertensive").mean() <= 0.52
    assert 0.01 <= (conditions == "hypotensive").mean() <= 0.05
    assert (conditions[ages < 30] == "hypertensive").mean() < 0.3
    assert (conditions[ages >= 65] == "hypertensive").mean() > 0.65
    assert ages.min() >= 18 and ages.max() <= 90


def test_population_means_and_age_trends(big):
    _, frame = big
    assert 117 <= frame["systolic_mm_hg"].mean() <= 127
    assert 68 <= frame["diastolic_mm_hg"].mean() <= 76
    slope = np.polyfit(frame["age"], frame["true_systolic_mm_hg"], 1)[0]
    assert 0.3 <= slope <= 0.8
    by_age = frame.groupby(frame["age"] // 10)["true_diastolic_mm_hg"].mean()
    assert by_age.loc[5] > by_age.loc[1] and by_age.loc[5] > by_age.loc[8]


def test_night_dip(big):
    _, frame = big
    hour = frame["effective"].dt.hour
    night = frame.loc[hour.between(1, 4), "true_systolic_mm_hg"].mean()
    day = frame.loc[hour.between(10, 18), "true_systolic_mm_hg"].mean()
    assert 0.80 <= night / day <= 0.92


def test_crises_are_rare_but_present(big):
    _, frame = big
    crisis = (frame["true_category"] == "hypertensive_crisis").mean()
    assert 0 < crisis < 0.01
    measured = ((frame["systolic_mm_hg"] > 180) | (frame["diastolic_mm_hg"] > 120)).mean()
    assert measured < 0.01
    assert (frame["episode"] == "hypertensive_crisis").any() and (frame["episode"] == "hypotensive_episode").any()


def test_label_is_the_true_values_against_thresholds(big):
    _, frame = big
    true_sys, true_dia = frame["true_systolic_mm_hg"].to_numpy(), frame["true_diastolic_mm_hg"].to_numpy()
    assert (frame["label"].to_numpy() == rule_anomaly_mask(true_sys, true_dia)).all()
    assert (frame["true_category"].to_numpy() == category_codes(true_sys, true_dia)).all()
    noisy = rule_anomaly_mask(frame["systolic_mm_hg"], frame["diastolic_mm_hg"])
    assert 0.02 < (noisy != frame["label"].to_numpy().astype(bool)).mean() < 0.25  # noise matters


def test_patient_repr_hides_identity():
    patient = Cohort(2, seed=0).patients[0]
    assert patient.name not in repr(patient) and "birth_date" not in repr(patient)
