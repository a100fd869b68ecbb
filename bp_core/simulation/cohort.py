"""The synthetic cohort simulator: patients, their true blood pressure, noisy readings.

Deterministic by seed: reading ``i`` is a pure function of ``i`` (counter-based SplitMix64
draws), so chunked generation equals one big frame. Each reading knows the noise-free
truth behind it (``label``: the true values cross the thresholds). The model of a
reading, its calibration and sources: docs/simulation.md and
docs/internals.md#the-simulated-cohort.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from bp_core.simulation.scenarios import BASELINE, FLEET_BLOCK, FLEET_NAMES, FLEETS, get_scenario

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

NORMOTENSIVE = "normotensive"
HYPERTENSIVE = "hypertensive"
HYPOTENSIVE = "hypotensive"
CONDITIONS: tuple[str, ...] = (NORMOTENSIVE, HYPERTENSIVE, HYPOTENSIVE)

HYPERTENSIVE_CRISIS = "hypertensive_crisis"
HYPOTENSIVE_EPISODE = "hypotensive_episode"
EPISODES: tuple[str, ...] = (HYPERTENSIVE_CRISIS, HYPOTENSIVE_EPISODE)

SEXES: tuple[str, ...] = ("female", "male")

# Changes of the true level under way at a reading ("" when none); precedence in this order.
ILLNESS_RISE = "illness_rise"
ILLNESS_FALL = "illness_fall"
ANTIHYPERTENSIVE_START = "antihypertensive_start"
DRIFT_RISE = "drift_rise"
DRIFT_FALL = "drift_fall"
CHANGES: tuple[str, ...] = (ILLNESS_RISE, ILLNESS_FALL, ANTIHYPERTENSIVE_START, DRIFT_RISE, DRIFT_FALL)

DEFAULT_START = datetime(2025, 1, 1, tzinfo=timezone.utc)
DEFAULT_INTERVAL = timedelta(hours=4)

# The dataset contract's columns, in order (see bp_core.simulation.datasets).
FRAME_COLUMNS: tuple[str, ...] = (
    "observation_id", "patient_id", "effective", "systolic_mm_hg", "diastolic_mm_hg",
    "true_systolic_mm_hg", "true_diastolic_mm_hg", "label", "true_category", "episode",
    "condition", "age", "sex",
    "change", "change_systolic_mm_hg", "change_diastolic_mm_hg", "device_id", "device_model",
)

_DAY_MS = 86_400_000
_HOUR_MS = 3_600_000

# Age structure of US adults (2020 Census, rounded): decade bins and their weights.
_AGE_EDGES = np.array([18, 30, 40, 50, 60, 70, 80, 91])
_AGE_WEIGHTS = np.array([0.21, 0.17, 0.16, 0.16, 0.15, 0.10, 0.05])
_FEMALE_SHARE = 0.51

# Hypertension (>=130/80) prevalence by age, both sexes (after Muntner et al. 2018).
_HTN_AGES = np.array([18, 30, 45, 55, 65, 75, 90])
_HTN_PREVALENCE = np.array([0.15, 0.24, 0.38, 0.57, 0.75, 0.82, 0.86])
_HTN_SEX_GAP = 0.25          # men x1.25, women x0.75 at 18, fading to 1 by 60

# Measurement and physiological variability (mmHg).
_NOISE_SD = (5.0, 4.0)
_NOISE_RHO = 0.3
_DAY_SD = {NORMOTENSIVE: (5.0, 3.5), HYPERTENSIVE: (7.0, 4.5), HYPOTENSIVE: (4.0, 3.0)}
_DAY_RHO = 0.6

# Episodes: probability that a given patient-day has one, by condition.
_CRISIS_PER_DAY = {NORMOTENSIVE: 0.0005, HYPERTENSIVE: 0.012, HYPOTENSIVE: 0.0}
_HYPO_EPISODE_PER_DAY = {NORMOTENSIVE: 0.002, HYPERTENSIVE: 0.002, HYPOTENSIVE: 0.05}
_HYPO_EPISODE_PER_DAY_ELDERLY = 0.01   # orthostatic hypotension from 70
_EPISODE_HOURS = (1.0, 6.0)

# Changes of the true level (module doc). Days count from the cohort's start, except
# illnesses, which fall in fixed 30-day periods of the calendar (like day effects).
_TREAT_SHARE = 0.30                    # of stage-2 patients (baseline >=140 or >=90)
_TREAT_START_DAYS = (2.0, 30.0)
_TREAT_TWO_DRUGS = 0.35
_TREAT_PER_DRUG = (9.1, 5.5)           # mmHg at the reference pretreatment pressure...
_TREAT_PER_10_MM_HG = (1.0, 1.1)       # ...and this much more per 10 mmHg above it
_TREAT_REFERENCE = (150.0, 90.0)
_TREAT_RESPONSE = (0.5, 1.5)
_TREAT_HALF_LIFE_DAYS = (3.5, 10.5)
_TREAT_UNDER_WAY_DAYS = 28.0
_DRIFT_SHARE = 0.10
_DRIFT_START_DAYS = (0.0, 30.0)
_DRIFT_DAYS = (21.0, 56.0)
_DRIFT_SYSTOLIC = (5.0, 12.0)
_DRIFT_DIASTOLIC_RATIO = 0.5
_ILLNESS_PERIOD_DAYS = 30
_ILLNESS_PER_PERIOD = 0.15
_ILLNESS_DAYS = (2.0, 10.0)
_ILLNESS_RISE_SHARE = 0.55
_ILLNESS_SYSTOLIC = (8.0, 25.0)
_ILLNESS_DIASTOLIC_RATIO = (0.4, 0.6)
_ILLNESS_RAMP_DAYS = 0.5               # onset and recovery each take half a day

# Device measuring range (mmHg): a cuff never reports outside it.
_SYSTOLIC_RANGE = (50, 260)
_DIASTOLIC_RANGE = (25, 160)

# Counter-based random streams: one constant per independent quantity.
_S_DAY_SYS, _S_DAY_DIA, _S_TIME, _S_NOISE_SYS, _S_NOISE_DIA = 1, 2, 3, 4, 5
_S_EPISODE, _S_EP_START, _S_EP_LENGTH, _S_EP_SYS, _S_EP_DIA = 6, 7, 8, 9, 10
_S_ID_HI, _S_ID_LO = 11, 12
_S_ILLNESS, _S_ILL_START, _S_ILL_LENGTH, _S_ILL_RISE, _S_ILL_SYS, _S_ILL_DIA = 13, 14, 15, 16, 17, 18
_S_FLEET, _S_DEVICE_HI, _S_DEVICE_LO = 19, 20, 21

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@dataclass
class SimulatedPatient:
    """One simulated adult. ``name`` and ``birth_date`` are kept out of ``repr`` (logs)."""

    patient_id: str
    name: str = field(repr=False)
    birth_date: date = field(repr=False)
    sex: str
    age: int
    condition: str
    baseline_systolic: float
    baseline_diastolic: float
    device_id: str = ""
    device_model: str = ""


@dataclass
class SimulatedReading:
    """One reading: the measured (integer) values and the noise-free truth behind them.

    ``label`` is True when the *true* values cross the clinical thresholds;
    ``episode`` names the acute episode in progress, or is None; ``change`` the change
    of the true level under way (``CHANGES``), or is None.
    """

    observation_id: str
    patient_id: str
    effective: datetime
    systolic_mm_hg: int
    diastolic_mm_hg: int
    true_systolic_mm_hg: float
    true_diastolic_mm_hg: float
    label: bool
    true_category: str
    episode: str | None
    change: str | None = None
    device_id: str = ""
    device_model: str = ""


# --- counter-based randomness ------------------------------------------------------

def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a bijective, well-mixing hash of uint64 arrays."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def _hash(key: np.uint64, stream: int, a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """64 random bits per element, a pure function of (key, stream, a[, b])."""
    base = np.full(1, key, dtype=np.uint64) + np.full(1, stream, dtype=np.uint64) * _GOLDEN
    h = _mix(_mix(base) + np.asarray(a, dtype=np.uint64))
    if b is not None:
        h = _mix(h + np.asarray(b, dtype=np.uint64) * _GOLDEN)
    return h


def _uniform(key: np.uint64, stream: int, a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Uniform floats in [0, 1), counter-based."""
    return (_hash(key, stream, a, b) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _normal(key: np.uint64, stream: int, a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Standard normal floats, counter-based (Box-Muller on the two 32-bit halves)."""
    h = _hash(key, stream, a, b)
    u1 = ((h >> np.uint64(32)).astype(np.float64) + 1.0) * (1.0 / 4294967296.0)   # (0, 1]
    u2 = (h & np.uint64(0xFFFFFFFF)).astype(np.float64) * (1.0 / 4294967296.0)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def _correlated(z1: np.ndarray, z2: np.ndarray, rho: float) -> np.ndarray:
    return rho * z1 + np.sqrt(1.0 - rho * rho) * z2


def _key_of(*parts: object) -> np.uint64:
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return np.uint64(int.from_bytes(digest, "little"))


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _uuid_strings(hi: np.ndarray, lo: np.ndarray):
    """RFC 9562 version-8 (custom) UUID strings of 128-bit values, as a pyarrow array.

    Built straight into an Arrow string buffer: no Python string per row.
    """
    import pyarrow as pa

    hi = (hi & np.uint64(0xFFFFFFFFFFFF0FFF)) | np.uint64(0x8000)
    lo = (lo & np.uint64(0x3FFFFFFFFFFFFFFF)) | np.uint64(0x8000000000000000)
    raw = np.empty((hi.size, 2), dtype=">u8")
    raw[:, 0], raw[:, 1] = hi, lo
    octets = raw.view(np.uint8).reshape(-1, 16)
    digits = np.empty((hi.size, 32), dtype=np.uint8)
    digits[:, 0::2] = _HEX[octets >> 4]
    digits[:, 1::2] = _HEX[octets & 15]
    text = np.full((hi.size, 36), ord("-"), dtype=np.uint8)
    src = 0
    for dst_start, dst_end in zip((0, 9, 14, 19, 24), (8, 13, 18, 23, 36)):
        width = dst_end - dst_start
        text[:, dst_start:dst_end] = digits[:, src:src + width]
        src += width
    offsets = np.arange(0, 36 * (hi.size + 1), 36, dtype=np.int32)
    return pa.StringArray.from_buffers(hi.size, pa.py_buffer(offsets), pa.py_buffer(text))


# --- patients ----------------------------------------------------------------------

def _truncated_normal(rng: np.random.Generator, mean: np.ndarray, sd: float,
                      low: float, high: float) -> np.ndarray:
    """Normal draws restricted to [low, high] by redrawing (deterministic given rng)."""
    mean = np.asarray(mean, dtype=np.float64)
    values = rng.normal(mean, sd)
    for _ in range(200):
        bad = (values < low) | (values > high)
        if not bad.any():
            break
        values[bad] = rng.normal(mean[bad] if mean.ndim else mean, sd)
    return np.clip(values, low, high)


def _draw_ages(rng: np.random.Generator, n: int, weights: np.ndarray = _AGE_WEIGHTS) -> np.ndarray:
    bins = rng.choice(len(weights), size=n, p=weights)
    return rng.integers(_AGE_EDGES[bins], _AGE_EDGES[bins + 1])


def hypertension_prevalence(age: np.ndarray, male: np.ndarray) -> np.ndarray:
    """P(hypertensive, >=130/80) for adults of these ages and sexes (see module doc)."""
    base = np.interp(age, _HTN_AGES, _HTN_PREVALENCE)
    gap = _HTN_SEX_GAP * np.clip((60.0 - age) / 42.0, 0.0, 1.0)
    return np.clip(base * (1.0 + np.where(male, gap, -gap)), 0.0, 0.95)


def hypotension_prevalence(age: np.ndarray, male: np.ndarray) -> np.ndarray:
    """P(chronic hypotension): ~2 %, more in young women and from 75."""
    young_woman = (~male) & (age < 40)
    return np.where(young_woman, 0.05, np.where(age >= 75, 0.04, 0.015))


def _diastolic_age_curve(age: np.ndarray) -> np.ndarray:
    """Rise of ~0.25 mmHg/year until 50, plateau, then a fall of ~0.3 mmHg/year from 60."""
    return 0.25 * (np.minimum(age, 50) - 18) - 0.3 * np.maximum(age - 60, 0)


def _baselines(rng: np.random.Generator, age: np.ndarray, male: np.ndarray,
               condition: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Awake baseline (systolic, diastolic) per patient, consistent with its condition."""
    n = age.size
    systolic = np.empty(n)
    diastolic = np.empty(n)
    dia_curve = _diastolic_age_curve(age)

    normo = condition == NORMOTENSIVE
    systolic[normo] = _truncated_normal(rng, 107.0 + 0.20 * (age[normo] - 18) + 4.0 * male[normo], 8.0, 92.0, 129.4)
    diastolic[normo] = _truncated_normal(rng, 64.5 + dia_curve[normo] + 2.0 * male[normo], 5.5, 60.0, 79.4)

    hyper = condition == HYPERTENSIVE
    systolic[hyper] = _truncated_normal(rng, 126.0 + 0.35 * (age[hyper] - 18) + 3.0 * male[hyper], 12.0, 110.0, 176.0)
    diastolic[hyper] = _truncated_normal(rng, 75.0 + dia_curve[hyper] + 2.0 * male[hyper], 8.0, 62.0, 110.0)
    # A hypertensive patient is >=130 systolic or >=80 diastolic by definition.
    below = hyper & (systolic < 130.0) & (diastolic < 80.0)
    systolic[below] = rng.uniform(130.0, 140.0, below.sum())

    hypo = condition == HYPOTENSIVE
    systolic[hypo] = _truncated_normal(rng, np.full(hypo.sum(), 95.0), 5.0, 84.0, 106.0)
    diastolic[hypo] = _truncated_normal(rng, np.full(hypo.sum(), 60.0), 4.0, 50.0, 67.0)
    return systolic, diastolic


def _night_dips(rng: np.random.Generator, age: np.ndarray, condition: np.ndarray) -> np.ndarray:
    """Fractional night-time dip per patient: 10–20 % in dippers, 0–10 % otherwise."""
    non_dipper_p = 0.2 + 0.2 * (condition == HYPERTENSIVE) + 0.1 * (age >= 70)
    non_dipper = rng.random(age.size) < non_dipper_p
    dipper_dip = np.clip(rng.normal(0.145, 0.03, age.size), 0.10, 0.20)
    return np.where(non_dipper, rng.uniform(0.0, 0.10, age.size), dipper_dip)


def _birth_date(reference: date, age: int, days_since_birthday: int) -> date:
    anniversary = reference - timedelta(days=days_since_birthday)
    try:
        return anniversary.replace(year=anniversary.year - age)
    except ValueError:  # 29 February in a non-leap year
        return anniversary.replace(year=anniversary.year - age, day=28)


def _night_weight(hour: np.ndarray) -> np.ndarray:
    """1 while asleep (23:00–06:00), 0 awake, linear one-hour ramps (22–23, 06–07)."""
    falling_asleep = np.clip(hour - 22.0, 0.0, 1.0)
    waking = np.clip(7.0 - hour, 0.0, 1.0)
    return np.where(hour >= 12.0, falling_asleep, waking)


# --- the cohort --------------------------------------------------------------------

def history_start(end: datetime, readings: int, patients: int, interval: timedelta = DEFAULT_INTERVAL) -> datetime:
    """The ``start`` at which ``readings`` readings of ``patients`` patients all fall before ``end``.

    Patient readings interleave (see ``Cohort``), so they fill ``ceil(readings / patients)``
    slots of ``interval``; the last slot closes at ``end``.

    Raises:
        ValueError: ``readings`` or ``patients`` is not positive.
    """
    if readings < 1 or patients < 1:
        raise ValueError(f"readings and patients must be positive, got {readings} and {patients}")
    return end - (-(-readings // patients)) * interval


class Cohort:
    """A deterministic synthetic cohort and its stream of readings.

    Reading ``i`` belongs to patient ``i % n_patients`` (patients interleave) and is that
    patient's ``k = i // n_patients``-th reading, taken at a random moment of the slot
    ``[start + k*interval, start + (k+1)*interval)``: timestamps strictly increase per
    patient, and whole seconds when ``interval`` is a whole number of seconds.

    ``scenario`` names the world (``bp_core.simulation.scenarios``): ``baseline`` is the
    calibrated cohort; ``cuff-offset`` has the same patients and truths, one device fleet
    reading high; ``older-cohort`` is another, older population. Every patient measures
    with one device of a fleet, assigned per block of 20 consecutive patients so that
    each fleet's share is exact in every full block.

    Raises:
        ValueError: ``n_patients`` < 1, ``interval`` under 1 ms, ``start`` naive, or an
            unknown ``scenario``.
    """

    def __init__(self, n_patients: int, seed: int, start: datetime | None = None, *,
                 interval: timedelta = DEFAULT_INTERVAL, scenario: str = BASELINE) -> None:
        world = get_scenario(scenario)
        if n_patients < 1:
            raise ValueError(f"n_patients must be at least 1, got {n_patients}")
        start = DEFAULT_START if start is None else start
        if start.tzinfo is None or start.utcoffset() is None:
            raise ValueError("start must be timezone-aware")
        interval_ms = round(interval.total_seconds() * 1000)
        if interval_ms < 1:
            raise ValueError("interval must be at least 1 ms")
        self.n_patients = n_patients
        self.seed = seed
        self.scenario = world.name
        self._world = world
        self.start = start.astimezone(timezone.utc)
        self.interval = interval
        self._interval_ms = interval_ms
        self._start_ms = round(self.start.timestamp() * 1000)
        # Keys that existed before scenarios keep their values in ``baseline``, so its
        # readings only differ from the stationary cohort's where changes are under way.
        population = () if world.population == "general" else (world.population,)
        self._population = population
        self._key = _key_of("physiology", seed, *population)
        world_ids = () if world.name == BASELINE else (world.name,)
        self._id_key = _key_of("ids", seed, n_patients, self._start_ms, interval_ms, *world_ids)
        self._device_key = _key_of("devices", seed, *population)
        self._draw_patients()
        self._draw_changes()
        self._draw_devices()

    def _rng(self, stream: int) -> np.random.Generator:
        """A seeded generator of patient attributes: another population, other patients."""
        population = [int(_key_of(*self._population))] if self._population else []
        return np.random.default_rng([self.seed, stream, *population])

    def _draw_patients(self) -> None:
        rng = self._rng(0x5EED)
        n = self.n_patients
        self._patient_ids = np.array([str(_uuid4(rng.bytes(16))) for _ in range(n)])
        weights = _AGE_WEIGHTS if self._world.age_weights is None else np.array(self._world.age_weights)
        self._age = _draw_ages(rng, n, weights)
        self._male = rng.random(n) >= _FEMALE_SHARE
        u = rng.random(n)
        p_hypo = hypotension_prevalence(self._age, self._male)
        p_hyper = hypertension_prevalence(self._age, self._male)
        self._condition = np.where(u < p_hypo, HYPOTENSIVE,
                                   np.where(u < p_hypo + p_hyper * (1 - p_hypo), HYPERTENSIVE, NORMOTENSIVE))
        self._baseline_sys, self._baseline_dia = _baselines(rng, self._age, self._male, self._condition)
        self._dip = _night_dips(rng, self._age, self._condition)
        self._days_since_birthday = rng.integers(0, 365, n)
        codes = {c: i for i, c in enumerate(CONDITIONS)}
        cond_code = np.array([codes[c] for c in self._condition], dtype=np.int8)
        self._condition_code = cond_code
        sd = np.array([_DAY_SD[c] for c in CONDITIONS])
        self._day_sd_sys, self._day_sd_dia = sd[cond_code, 0], sd[cond_code, 1]
        self._p_crisis = np.array([_CRISIS_PER_DAY[c] for c in CONDITIONS])[cond_code]
        p_hypo_ep = np.array([_HYPO_EPISODE_PER_DAY[c] for c in CONDITIONS])[cond_code]
        self._p_hypo_episode = np.where(self._age >= 70, np.maximum(p_hypo_ep, _HYPO_EPISODE_PER_DAY_ELDERLY),
                                        p_hypo_ep)

    def _draw_changes(self) -> None:
        """Per-patient treatment starts and drifts (a generator of their own, so the
        patients drawn above do not depend on them)."""
        rng = self._rng(0xC4A6E)
        n = self.n_patients
        stage2 = (self._condition == HYPERTENSIVE) & ((self._baseline_sys >= 140.0) | (self._baseline_dia >= 90.0))
        treated = stage2 & (rng.random(n) < _TREAT_SHARE)
        drugs = np.where(rng.random(n) < _TREAT_TWO_DRUGS, 2.0, 1.0)
        response = rng.uniform(*_TREAT_RESPONSE, n)
        per_drug_sys = _TREAT_PER_DRUG[0] + _TREAT_PER_10_MM_HG[0] * (self._baseline_sys - _TREAT_REFERENCE[0]) / 10
        per_drug_dia = _TREAT_PER_DRUG[1] + _TREAT_PER_10_MM_HG[1] * (self._baseline_dia - _TREAT_REFERENCE[1]) / 10
        self._treat_sys = np.where(treated, np.maximum(drugs * response * per_drug_sys, 0.0), 0.0)
        self._treat_dia = np.where(treated, np.maximum(drugs * response * per_drug_dia, 0.0), 0.0)
        self._treat_start_days = np.where(treated, rng.uniform(*_TREAT_START_DAYS, n), np.inf)
        self._treat_half_life_days = rng.uniform(*_TREAT_HALF_LIFE_DAYS, n)

        drifting = rng.random(n) < _DRIFT_SHARE
        sign = np.where(rng.random(n) < 0.5, 1.0, -1.0)
        self._drift_sys = np.where(drifting, sign * rng.uniform(*_DRIFT_SYSTOLIC, n), 0.0)
        self._drift_dia = self._drift_sys * _DRIFT_DIASTOLIC_RATIO
        self._drift_start_days = np.where(drifting, rng.uniform(*_DRIFT_START_DAYS, n), np.inf)
        self._drift_days = rng.uniform(*_DRIFT_DAYS, n)

    def _draw_devices(self) -> None:
        """One device per patient; fleets by a seeded shuffle of each block of 20 patients."""
        index = np.arange(self.n_patients, dtype=np.int64)
        block, slot = index // FLEET_BLOCK, index % FLEET_BLOCK
        # Rank of each patient's slot within its block, by a per-(block, slot) hash.
        blocks = np.unique(block)
        draws = _hash(self._device_key, _S_FLEET, np.repeat(blocks, FLEET_BLOCK),
                      np.tile(np.arange(FLEET_BLOCK, dtype=np.int64), blocks.size)).reshape(-1, FLEET_BLOCK)
        ranks = np.argsort(np.argsort(draws, axis=1, kind="stable"), axis=1, kind="stable")
        slots_per_fleet = [round(fleet.share * FLEET_BLOCK) for fleet in FLEETS]
        fleet_of_rank = np.repeat(np.arange(len(FLEETS), dtype=np.int8), slots_per_fleet)
        self._fleet_code = fleet_of_rank[ranks[block - blocks[0], slot]]
        self._device_ids = _uuid_strings(_hash(self._device_key, _S_DEVICE_HI, index),
                                         _hash(self._device_key, _S_DEVICE_LO, index))
        offsets = np.array([self._world.device_offsets.get(name, (0.0, 0.0)) for name in FLEET_NAMES])
        self._offset_sys, self._offset_dia = offsets[self._fleet_code, 0], offsets[self._fleet_code, 1]

    @cached_property
    def patients(self) -> list[SimulatedPatient]:
        """The patients, with Faker identities (built on first access: Faker is slow)."""
        return self.patients_at(range(self.n_patients))

    def patients_at(self, indices) -> list[SimulatedPatient]:
        """The patients at these cohort positions, with their Faker identities.

        Each identity is seeded by the patient alone, so any subset is as cheap as its size
        (about 80 µs a patient) and equal to the same patients in ``patients``.
        """
        fake = self._faker
        reference = self.start.date()
        device_ids = self._device_id_list
        patients = []
        for i in indices:
            fake.seed_instance(int(_key_of("identity", self.seed, *self._population, i)))
            male = bool(self._male[i])
            given = fake.first_name_male() if male else fake.first_name_female()
            patients.append(SimulatedPatient(
                patient_id=str(self._patient_ids[i]),
                name=f"{given} {fake.last_name()}",
                birth_date=_birth_date(reference, int(self._age[i]), int(self._days_since_birthday[i])),
                sex="male" if male else "female",
                age=int(self._age[i]),
                condition=str(self._condition[i]),
                baseline_systolic=float(self._baseline_sys[i]),
                baseline_diastolic=float(self._baseline_dia[i]),
                device_id=device_ids[i],
                device_model=FLEET_NAMES[self._fleet_code[i]],
            ))
        return patients

    @cached_property
    def _faker(self):
        from faker import Faker

        return Faker("en_US")

    @cached_property
    def _device_id_list(self) -> list[str]:
        return self._device_ids.to_pylist()

    @property
    def patient_ids(self) -> list[str]:
        """Patient ids in cohort order (cheap: no Faker)."""
        return self._patient_ids.tolist()

    def readings(self, n: int, *, first: int = 0, chunk: int = 50_000) -> Iterator[SimulatedReading]:
        """Readings ``first .. first+n-1`` one by one (same values as ``readings_frame``)."""
        for offset in range(0, n, chunk):
            frame = self.readings_frame(min(chunk, n - offset), first=first + offset)
            effective = frame["effective"].dt.to_pydatetime()
            rows = zip(*(frame[c].tolist() for c in (
                "observation_id", "patient_id", "systolic_mm_hg", "diastolic_mm_hg", "true_systolic_mm_hg",
                "true_diastolic_mm_hg", "label", "true_category", "episode", "change", "device_id", "device_model")))
            for when, (obs_id, patient_id, sys_, dia, true_sys, true_dia, label, category, episode, change,
                       device_id, device_model) in zip(effective, rows):
                yield SimulatedReading(
                    observation_id=obs_id, patient_id=patient_id, effective=when,
                    systolic_mm_hg=int(sys_), diastolic_mm_hg=int(dia),
                    true_systolic_mm_hg=float(true_sys), true_diastolic_mm_hg=float(true_dia),
                    label=bool(label), true_category=category, episode=episode or None,
                    change=change or None, device_id=device_id, device_model=device_model,
                )

    def readings_frame(self, n: int, *, first: int = 0) -> pd.DataFrame:
        """Readings ``first .. first+n-1`` as a DataFrame with ``FRAME_COLUMNS``, vectorised.

        Columns and dtypes are the dataset contract's (``bp_core.simulation.datasets``): ``label`` is
        0/1 int64, ``episode`` and ``change`` are '' when none, ``effective`` is tz-aware UTC,
        strings are pandas' (Arrow-backed) ``str``. ``frame.attrs`` holds ``seed``,
        ``patients``, ``start``, ``interval_s`` and ``scenario``.

        Raises:
            ValueError: ``n`` or ``first`` is negative.
        """
        import pandas as pd
        import pyarrow as pa

        frame = self.readings_table(n, first=first).to_pandas(
            types_mapper={pa.string(): pd.StringDtype("pyarrow", na_value=np.nan)}.get)
        frame.attrs.update(seed=self.seed, patients=self.n_patients, start=self.start.isoformat(),
                           interval_s=self._interval_ms / 1000, scenario=self.scenario)
        return frame

    def readings_table(self, n: int, *, first: int = 0):
        """Readings ``first .. first+n-1`` as a ``pyarrow.Table`` (the frame's columns).

        Raises:
            ValueError: ``n`` or ``first`` is negative.
        """
        import pyarrow as pa

        if n < 0 or first < 0:
            raise ValueError("n and first must be non-negative")
        columns = self._generate(np.arange(first, first + n, dtype=np.int64))
        return pa.table({name: columns[name] for name in FRAME_COLUMNS})

    def _generate(self, index: np.ndarray) -> dict:
        """All columns (Arrow arrays) for these reading indices: a pure function of them."""
        import pyarrow as pa

        patient = index % self.n_patients
        k = index // self.n_patients
        u_time = _uniform(self._key, _S_TIME, patient, k)
        if self._interval_ms % 1000 == 0:
            within = np.floor(u_time * (self._interval_ms // 1000)).astype(np.int64) * 1000
        else:
            within = np.floor(u_time * self._interval_ms).astype(np.int64)
        epoch_ms = self._start_ms + k * self._interval_ms + within
        day = epoch_ms // _DAY_MS
        hour = (epoch_ms % _DAY_MS) / _HOUR_MS

        z_sys = _normal(self._key, _S_DAY_SYS, patient, day)
        z_dia = _correlated(z_sys, _normal(self._key, _S_DAY_DIA, patient, day), _DAY_RHO)
        change_sys, change_dia, change_code = self._changes(patient, epoch_ms)
        awake_sys = self._baseline_sys[patient] + self._day_sd_sys[patient] * z_sys + change_sys
        awake_dia = self._baseline_dia[patient] + self._day_sd_dia[patient] * z_dia + change_dia
        dip = 1.0 - self._dip[patient] * _night_weight(hour)
        true_sys, true_dia = awake_sys * dip, awake_dia * dip
        episode_code = self._apply_episodes(patient, day, hour, true_sys, true_dia)

        n_sys = _normal(self._key, _S_NOISE_SYS, index)
        n_dia = _correlated(n_sys, _normal(self._key, _S_NOISE_DIA, index), _NOISE_RHO)
        measured_sys = np.clip(np.rint(true_sys + self._offset_sys[patient] + _NOISE_SD[0] * n_sys),
                               *_SYSTOLIC_RANGE).astype(np.int64)
        measured_dia = np.clip(np.rint(true_dia + self._offset_dia[patient] + _NOISE_SD[1] * n_dia),
                               *_DIASTOLIC_RANGE).astype(np.int64)

        def vocabulary(words, codes):
            return pa.array(list(words), type=pa.string()).take(pa.array(codes))

        patient_take = pa.array(patient)
        patient_arrow = pa.array(self._patient_ids.tolist(), type=pa.string())
        return {
            "observation_id": _uuid_strings(_hash(self._id_key, _S_ID_HI, index),
                                            _hash(self._id_key, _S_ID_LO, index)),
            "patient_id": patient_arrow.take(patient_take),
            "effective": pa.array(epoch_ms, type=pa.timestamp("ms", tz="UTC")),
            "systolic_mm_hg": measured_sys,
            "diastolic_mm_hg": measured_dia,
            "true_systolic_mm_hg": true_sys,
            "true_diastolic_mm_hg": true_dia,
            "label": true_anomaly(true_sys, true_dia).astype(np.int64),
            "true_category": _as_arrow_strings(true_categories(true_sys, true_dia), _category_names()),
            "episode": vocabulary(("",) + EPISODES, episode_code),
            "condition": vocabulary(CONDITIONS, self._condition_code[patient]),
            "age": self._age[patient].astype(np.int64),
            "sex": vocabulary(SEXES, self._male[patient].astype(np.int8)),
            "change": vocabulary(("",) + CHANGES, change_code),
            "change_systolic_mm_hg": change_sys,
            "change_diastolic_mm_hg": change_dia,
            "device_id": self._device_ids.take(patient_take),
            "device_model": vocabulary(FLEET_NAMES, self._fleet_code[patient]),
        }

    def _changes(self, patient: np.ndarray, epoch_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(systolic, diastolic) change of the true awake level at these readings, and the
        code of the change under way (indexes ``("",) + CHANGES``; illness first)."""
        days = (epoch_ms - self._start_ms) / _DAY_MS

        since = days - self._treat_start_days[patient]           # -inf or negative before the start
        treating = since >= 0
        fraction = np.where(treating, -np.expm1(-np.log(2.0) * np.maximum(since, 0.0)
                                                / self._treat_half_life_days[patient]), 0.0)
        change_sys = -self._treat_sys[patient] * fraction
        change_dia = -self._treat_dia[patient] * fraction
        starting = treating & (since < _TREAT_UNDER_WAY_DAYS)

        into = days - self._drift_start_days[patient]
        length = self._drift_days[patient]
        progress = np.clip(np.where(np.isfinite(into), into, 0.0) / length, 0.0, 1.0)
        change_sys += self._drift_sys[patient] * progress
        change_dia += self._drift_dia[patient] * progress
        drifting = (into > 0) & (into < length)

        ill_sys, ill_dia = self._illness(patient, epoch_ms)
        change_sys += ill_sys
        change_dia += ill_dia
        ill = ill_sys != 0.0

        code = np.zeros(patient.size, dtype=np.int8)
        drift_code = np.where(self._drift_sys[patient] > 0, CHANGES.index(DRIFT_RISE), CHANGES.index(DRIFT_FALL)) + 1
        code = np.where(drifting, drift_code, code)
        code = np.where(starting, CHANGES.index(ANTIHYPERTENSIVE_START) + 1, code)
        ill_code = np.where(ill_sys > 0, CHANGES.index(ILLNESS_RISE), CHANGES.index(ILLNESS_FALL)) + 1
        code = np.where(ill, ill_code, code).astype(np.int8)
        return change_sys, change_dia, code

    def _illness(self, patient: np.ndarray, epoch_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Illness offsets: at most one illness starts in each 30-day period of a patient's
        calendar; one may run on from the previous period."""
        period_ms = _ILLNESS_PERIOD_DAYS * _DAY_MS
        current = epoch_ms // period_ms
        ill_sys = np.zeros(patient.size)
        ill_dia = np.zeros(patient.size)
        for period in (current, current - 1):
            happens = _uniform(self._key, _S_ILLNESS, patient, period) < _ILLNESS_PER_PERIOD
            begins = (period + _uniform(self._key, _S_ILL_START, patient, period)) * _ILLNESS_PERIOD_DAYS
            lasts = _ILLNESS_DAYS[0] + (_ILLNESS_DAYS[1] - _ILLNESS_DAYS[0]) * _uniform(
                self._key, _S_ILL_LENGTH, patient, period)
            now = epoch_ms / _DAY_MS
            # Trapezoid: half a day to set in, a plateau, half a day to recover.
            weight = np.clip(np.minimum(now - begins, begins + lasts - now) / _ILLNESS_RAMP_DAYS, 0.0, 1.0)
            weight = np.where(happens, weight, 0.0)
            rises = _uniform(self._key, _S_ILL_RISE, patient, period) < _ILLNESS_RISE_SHARE
            size = _ILLNESS_SYSTOLIC[0] + (_ILLNESS_SYSTOLIC[1] - _ILLNESS_SYSTOLIC[0]) * _uniform(
                self._key, _S_ILL_SYS, patient, period)
            ratio = _ILLNESS_DIASTOLIC_RATIO[0] + (_ILLNESS_DIASTOLIC_RATIO[1] - _ILLNESS_DIASTOLIC_RATIO[0]) * _uniform(
                self._key, _S_ILL_DIA, patient, period)
            signed = np.where(rises, size, -size) * weight
            ill_sys += signed
            ill_dia += signed * ratio
        return ill_sys, ill_dia

    def _apply_episodes(self, patient: np.ndarray, day: np.ndarray, hour: np.ndarray,
                        true_sys: np.ndarray, true_dia: np.ndarray) -> np.ndarray:
        """Override the true values in place during episodes; return episode codes."""
        draw = _uniform(self._key, _S_EPISODE, patient, day)
        p_crisis = self._p_crisis[patient]
        is_crisis = draw < p_crisis
        is_hypo = (~is_crisis) & (draw < p_crisis + self._p_hypo_episode[patient])
        begins = 24.0 * _uniform(self._key, _S_EP_START, patient, day)
        length = _EPISODE_HOURS[0] + (_EPISODE_HOURS[1] - _EPISODE_HOURS[0]) * _uniform(
            self._key, _S_EP_LENGTH, patient, day)
        ongoing = (hour >= begins) & (hour < begins + length)
        crisis = is_crisis & ongoing
        hypo = is_hypo & ongoing
        u_sys = _uniform(self._key, _S_EP_SYS, patient, day)
        u_dia = _uniform(self._key, _S_EP_DIA, patient, day)
        # Crisis: systolic 182–215 and diastolic 95–125, so some are "and", some "or".
        np.maximum(true_sys, np.where(crisis, 182.0 + 33.0 * u_sys, 0.0), out=true_sys)
        np.maximum(true_dia, np.where(crisis, 95.0 + 30.0 * u_dia, 0.0), out=true_dia)
        # Hypotensive episode: systolic 72–88, diastolic 42–57.
        np.minimum(true_sys, np.where(hypo, 72.0 + 16.0 * u_sys, np.inf), out=true_sys)
        np.minimum(true_dia, np.where(hypo, 42.0 + 15.0 * u_dia, np.inf), out=true_dia)
        # Codes index ("",) + EPISODES.
        return np.where(crisis, 1, np.where(hypo, 2, 0)).astype(np.int8)


def _as_arrow_strings(names: np.ndarray, vocabulary: tuple[str, ...]):
    """Names from a small vocabulary to an Arrow string array, without a Python str per row.

    Raises:
        ValueError: a name is not in ``vocabulary``.
    """
    import pyarrow as pa

    codes = np.full(names.size, -1, dtype=np.int8)
    for code, name in enumerate(vocabulary):
        codes[names == name] = code
    if (codes < 0).any():
        raise ValueError(f"unexpected name {names[codes < 0][0]!r}")
    return pa.array(vocabulary, type=pa.string()).take(pa.array(codes))


def _uuid4(raw: bytes):
    import uuid

    return uuid.UUID(bytes=raw, version=4)


# --- clinical labels of the true values ---------------------------------------------

def true_anomaly(systolic: np.ndarray, diastolic: np.ndarray) -> np.ndarray:
    """Boolean mask: the values cross the default clinical thresholds (``bp_core.rules``)."""
    from bp_core.rules import Thresholds, rule_anomaly_mask

    return np.asarray(rule_anomaly_mask(systolic, diastolic, Thresholds()), dtype=bool)


def _category_names() -> tuple[str, ...]:
    from bp_core.rules import CATEGORIES

    return tuple(CATEGORIES)


def true_categories(systolic: np.ndarray, diastolic: np.ndarray) -> np.ndarray:
    """AHA 2017 category names of these values (``bp_core.rules.category_codes``)."""
    from bp_core.rules import category_codes

    return category_codes(systolic, diastolic)
