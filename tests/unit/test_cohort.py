"""bp_core.simulation.cohort: determinism, calibration (prevalences, trends, dip, rare crises,
changes of the true level), labels, devices and scenarios."""

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from bp_core.simulation.cohort import CHANGES, CONDITIONS, FRAME_COLUMNS, Cohort, history_start
from bp_core.simulation.scenarios import FLEETS, OFFSET_FLEET, SCENARIO_NAMES
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
    assert [r.device_model for r in readings] == frame["device_model"].tolist()
    assert [r.change or "" for r in readings] == frame["change"].tolist()


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


# --- changes of the true level -------------------------------------------------------

@pytest.fixture(scope="module")
def daily():
    """2,000 patients read once a day for 60 days from the cohort's start."""
    frame = Cohort(2000, seed=5, interval=timedelta(days=1)).readings_frame(2000 * 60)
    frame["day"] = (frame["effective"] - frame["effective"].min()).dt.total_seconds() / 86_400
    return frame


def _changed(frame: pd.DataFrame) -> pd.Series:
    return frame.groupby("patient_id")["change"].apply(lambda change: (change != "").any())


def test_most_patients_are_stable_and_every_change_occurs(daily):
    first_month = daily[daily["day"] < 30]
    assert 0.55 <= 1 - _changed(first_month).mean() <= 0.85
    assert set(daily["change"].unique()) == {"", *CHANGES}
    under_way = (daily["change"] != "").mean()
    assert 0.05 <= under_way <= 0.25
    # A patient with no change under way over the window has its starting level throughout.
    stable = _changed(daily)
    stable = stable[~stable].index
    rows = daily[daily["patient_id"].isin(stable)]
    assert (rows["change_systolic_mm_hg"] == 0).all() and (rows["change_diastolic_mm_hg"] == 0).all()


def test_antihypertensive_start_lowers_by_about_a_standard_dose_within_weeks(daily):
    starting = daily[daily["change"] == "antihypertensive_start"].copy()
    first = starting.groupby("patient_id")["day"].min().rename("first")
    starting = starting.join(first, on="patient_id")
    starting["since"] = starting["day"] - starting["first"]
    patients = daily.drop_duplicates("patient_id").set_index("patient_id")
    treated = patients.loc[first.index]
    assert (treated["condition"] == "hypertensive").all()
    assert 0.03 <= len(first) / len(patients) <= 0.15
    # After ~4 weeks: one or two standard doses (9.1/5.5 each, Law 2003), by individual response.
    final = starting.sort_values("day").groupby("patient_id").tail(1)
    assert -16 <= final["change_systolic_mm_hg"].mean() <= -8
    assert -10 <= final["change_diastolic_mm_hg"].mean() <= -4
    assert (final["change_systolic_mm_hg"] < -20).any(), "combinations in strong responders fall further"
    # Half the effect after about a week (Lasserson 2011).
    week = starting[starting["since"].between(6, 8)].groupby("patient_id")["change_systolic_mm_hg"].mean()
    assert 0.35 <= week.mean() / final["change_systolic_mm_hg"].mean() <= 0.75


def test_illnesses_last_days_and_shift_both_ways(daily):
    ill = daily[daily["change"].isin(["illness_rise", "illness_fall"])]
    assert 0.01 <= len(ill) / len(daily) <= 0.06
    signs = np.sign(ill["change_systolic_mm_hg"]).groupby(ill["change"]).mean()
    assert signs["illness_rise"] > 0.9 and signs["illness_fall"] < -0.9
    peaks = ill.groupby(["patient_id", "change"])["change_systolic_mm_hg"].apply(lambda c: c.abs().max())
    assert 12 <= peaks.mean() <= 22
    assert (peaks >= 20).mean() > 0.15, "some cross the 20 mmHg baseline delta"
    days = ill.groupby(["patient_id", "change"]).size()   # one reading a day
    assert 1 <= days.median() <= 10


def test_drifts_are_gradual(daily):
    drift = daily[daily["change"].isin(["drift_rise", "drift_fall"])]
    assert 0.05 <= drift["patient_id"].nunique() / daily["patient_id"].nunique() <= 0.15
    by_kind = drift.groupby("change")["change_systolic_mm_hg"].mean()
    assert by_kind["drift_rise"] > 0 > by_kind["drift_fall"]
    steps = drift.sort_values("day").groupby("patient_id")["change_systolic_mm_hg"].diff().abs().dropna()
    assert steps.median() < 1.0, "a few tenths of mmHg a day"


def test_changes_keep_the_cohort_calibration(big):
    _, frame = big
    assert (frame["change"] != "").mean() < 0.2
    assert abs(frame["change_systolic_mm_hg"].mean()) < 2.0


# --- devices and scenarios -----------------------------------------------------------

def test_every_patient_has_one_device_and_fleets_have_exact_shares():
    frame = Cohort(400, seed=8).readings_frame(4000)
    per_patient = frame.groupby("patient_id")[["device_id", "device_model"]].nunique()
    assert (per_patient == 1).all().all()
    devices = frame.drop_duplicates("patient_id")
    assert devices["device_id"].is_unique
    shares = devices["device_model"].value_counts(normalize=True)
    assert shares.to_dict() == pytest.approx({fleet.name: fleet.share for fleet in FLEETS})
    patient = Cohort(400, seed=8).patients[3]
    assert (patient.device_id, patient.device_model) == tuple(
        devices.set_index("patient_id").loc[patient.patient_id, ["device_id", "device_model"]])


def test_unknown_scenario_is_refused_with_the_valid_names():
    with pytest.raises(ValueError, match="baseline, cuff-offset, older-cohort"):
        Cohort(10, seed=0, scenario="moon")
    assert SCENARIO_NAMES == ("baseline", "cuff-offset", "older-cohort")


def test_cuff_offset_biases_one_fleet_and_keeps_the_truth():
    base = Cohort(1000, seed=4).readings_frame(20_000)
    offset = Cohort(1000, seed=4, scenario="cuff-offset").readings_frame(20_000)
    assert offset.attrs["scenario"] == "cuff-offset"
    for column in ("patient_id", "effective", "true_systolic_mm_hg", "true_diastolic_mm_hg", "label",
                   "true_category", "change", "device_id", "device_model"):
        assert offset[column].equals(base[column]), column
    assert not offset["observation_id"].isin(base["observation_id"]).any(), "another world, other readings"
    fleet = offset["device_model"] == OFFSET_FLEET
    assert offset.loc[fleet, "patient_id"].nunique() == 200, "20 % of the patients"
    delta_sys = offset["systolic_mm_hg"] - base["systolic_mm_hg"]
    delta_dia = offset["diastolic_mm_hg"] - base["diastolic_mm_hg"]
    assert (delta_sys[fleet] == 15).mean() > 0.99 and (delta_dia[fleet] == 8).mean() > 0.99  # but clipping
    assert (delta_sys[~fleet] == 0).all() and (delta_dia[~fleet] == 0).all()


def test_older_cohort_is_another_older_population_with_higher_true_pressures(big):
    cohort, frame = big
    older = Cohort(4000, seed=11, scenario="older-cohort")
    older_frame = older.readings_frame(200_000)
    assert not set(older.patient_ids) & set(cohort.patient_ids)
    ages = np.array([p.age for p in cohort.patients])
    older_ages = older_frame.drop_duplicates("patient_id")["age"].to_numpy()
    assert np.median(older_ages) >= np.median(ages) + 10
    assert (older_ages >= 60).mean() == pytest.approx(0.60, abs=0.05)
    hypertensive = older_frame.drop_duplicates("patient_id")["condition"] == "hypertensive"
    assert hypertensive.mean() > (np.array([p.condition for p in cohort.patients]) == "hypertensive").mean() + 0.1
    assert older_frame["true_systolic_mm_hg"].mean() > frame["true_systolic_mm_hg"].mean() + 5
    assert older_frame["label"].mean() > frame["label"].mean()
    assert older_frame.groupby("device_model")["patient_id"].nunique().sum() == 4000


# --- time -----------------------------------------------------------------------------

def test_history_start_ends_the_last_slot_at_end():
    end = datetime(2026, 3, 2, tzinfo=timezone.utc)
    start = history_start(end, 1000, 30)
    assert start == end - 34 * timedelta(hours=4)
    frame = Cohort(30, seed=1, start=start).readings_frame(1000)
    assert frame["effective"].max() < end
    with pytest.raises(ValueError):
        history_start(end, 0, 30)
