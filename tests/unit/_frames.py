"""A small readings frame in the data-set contract of ``bp_core.simulation.datasets``, for tests.

Independent of the simulator on purpose: unit tests of features and metrics should not
depend on the cohort's calibration. Patients have a baseline (some hypertensive, some
hypotensive), readings add measurement noise, a few are crises; ``label`` and
``true_category`` are computed from the noise-free values like the contract says.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

COLUMNS = ("observation_id", "patient_id", "effective", "systolic_mm_hg", "diastolic_mm_hg",
           "true_systolic_mm_hg", "true_diastolic_mm_hg", "label", "true_category", "episode",
           "condition", "age", "sex")


def true_label(systolic: np.ndarray, diastolic: np.ndarray) -> np.ndarray:
    """1 when the values cross 140/90 (high) or 90/60 (low)."""
    return ((systolic > 140) | (systolic < 90) | (diastolic > 90) | (diastolic < 60)).astype(np.int64)


def true_category(systolic: np.ndarray, diastolic: np.ndarray) -> np.ndarray:
    """AHA 2017 category with hypotension, crisis taking precedence."""
    out = np.full(systolic.shape, "normal", dtype=object)
    out[(systolic >= 120) & (diastolic < 80)] = "elevated"
    out[(systolic >= 130) | (diastolic >= 80)] = "hypertension_stage_1"
    out[(systolic >= 140) | (diastolic >= 90)] = "hypertension_stage_2"
    out[(systolic > 180) | (diastolic > 120)] = "hypertensive_crisis"
    out[(systolic < 90) | (diastolic < 60)] = "hypotension"
    return out.astype(str)


def readings_frame(*, patients: int = 40, readings: int = 4000, seed: int = 0) -> pd.DataFrame:
    """A deterministic frame of ``readings`` rows over ``patients`` patients."""
    rng = np.random.default_rng(seed)
    condition = rng.choice(["normotensive", "hypertensive", "hypotensive"], size=patients, p=[0.6, 0.3, 0.1])
    base_sys = np.where(condition == "hypertensive", 145.0, np.where(condition == "hypotensive", 95.0, 118.0))
    base_dia = np.where(condition == "hypertensive", 88.0, np.where(condition == "hypotensive", 60.0, 74.0))
    base_sys = base_sys + rng.normal(0, 8, patients)
    base_dia = base_dia + rng.normal(0, 5, patients)
    patient = rng.integers(0, patients, readings)
    true_sys = base_sys[patient] + rng.normal(0, 6, readings)
    true_dia = base_dia[patient] + rng.normal(0, 4, readings)
    crisis = rng.random(readings) < 0.01
    true_sys[crisis] += 55
    true_dia[crisis] += 30
    episode = np.where(crisis, "crisis", "")
    measured_sys = np.rint(true_sys + rng.normal(0, 5, readings)).astype(np.int64)
    measured_dia = np.rint(true_dia + rng.normal(0, 4, readings)).astype(np.int64)
    return pd.DataFrame({
        "observation_id": [f"obs-{seed}-{i}" for i in range(readings)],
        "patient_id": [f"pat-{seed}-{p}" for p in patient],
        "effective": pd.date_range("2025-01-01", periods=readings, freq="min", tz="UTC"),
        "systolic_mm_hg": measured_sys,
        "diastolic_mm_hg": measured_dia,
        "true_systolic_mm_hg": true_sys,
        "true_diastolic_mm_hg": true_dia,
        "label": true_label(true_sys, true_dia),
        "true_category": true_category(true_sys, true_dia),
        "episode": episode,
        "condition": condition[patient],
        "age": rng.integers(18, 90, patients)[patient],
        "sex": rng.choice(["female", "male"], patients)[patient],
    }, columns=list(COLUMNS))
