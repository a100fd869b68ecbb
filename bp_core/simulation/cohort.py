"""The synthetic cohort simulator: patients, their true blood pressure, noisy readings.

Deterministic by seed: the same ``(n_patients, seed, start, interval)`` always gives the
same patients and the same readings, reading by reading.

Model of one reading (patient ``p``, its ``k``-th reading, at clock time ``t``)::

    awake_level  = baseline(p) + day_effect(p, day(t))           # day-to-day variability
    true_value   = awake_level * (1 - dip(p) * night(t))         # night-time dip
    true_value   = episode(p, day(t), t) applied, if any         # rare crisis / hypotension
    measured     = round(true_value + measurement_noise)         # what the cuff reports
    label        = true_value crosses the clinical thresholds    # 140/90 high, 90/60 low

So the label is about the *true* pressure, and a model trained on the measured values
learns P(true anomaly | noisy measurement).

Calibration (orders of magnitude, from the sources named):

- Age of adults 18–90: piecewise-uniform on decades, weighted like the US adult
  population (US Census Bureau, 2020 Census age structure): 21 % 18–29 … 5 % 80–90;
  51 % female.
- Hypertension (≥130/80, 2017 ACC/AHA guideline, Whelton et al., Hypertension 2018):
  age-specific prevalence after Muntner et al., Circulation 2018 ("Potential US
  population impact of the 2017 ACC/AHA high blood pressure guideline", NHANES
  2011–2014): about 1 in 4 below 45, about half at 45–64, three quarters or more from
  65; men more often than women below 60. Overall ~46 % of the simulated adults.
- Hypotension: chronic low blood pressure in a few percent (more in young women and
  the very old); hypotensive episodes (e.g. orthostatic) mostly in them and the elderly.
- Levels: adult mean SBP ~122, DBP ~72 mmHg (NHANES 2015–2018 means, CDC NCHS data
  briefs); SBP rises ~0.5 mmHg/year across adulthood; DBP rises until the fifties then
  falls (Framingham: Franklin et al., Circulation 1997), which yields isolated systolic
  hypertension in the elderly.
- Variability: day-to-day SD ~5 (SBP) / ~3.5 (DBP) mmHg, larger in hypertension;
  measurement noise SD 5 / 4 mmHg (within-visit repeatability of automated cuffs, AHA
  scientific statement on BP measurement, Muntner et al., Hypertension 2019).
- Night-time dip: 10–20 % in "dippers" (~70 %); 0–10 % in "non-dippers", who are more
  common with hypertension and age (ESH ambulatory BP monitoring position paper,
  O'Brien et al., J Hypertens 2013). Sleep is taken as 23:00–06:00 UTC with one-hour
  ramps; readings are spread evenly over the 24 hours (continuous monitoring).
- Episodes: a hypertensive crisis (>180 and/or >120, AHA 2017) or a hypotensive episode
  lasts 1–6 hours on a patient-day drawn at random. They are deliberately more frequent
  than clinical incidence so that a stream contains some, yet crisis readings stay
  well under 1 % of all readings (about 0.1 %).

Randomness: patient attributes come from a seeded ``numpy.random.Generator`` and a
seeded ``Faker``; reading-level draws use a counter-based hash (SplitMix64) of
``(seed, stream, patient, day or reading index)``, so reading ``i`` is a pure function of
``i``: chunked generation (the producer) equals one big frame, and all readings of a
patient on one day share that day's effect and episode.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

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

DEFAULT_START = datetime(2025, 1, 1, tzinfo=timezone.utc)
DEFAULT_INTERVAL = timedelta(hours=4)

# The dataset contract's columns, in order (see bp_core.simulation.datasets).
FRAME_COLUMNS: tuple[str, ...] = (
    "observation_id", "patient_id", "effective", "systolic_mm_hg", "diastolic_mm_hg",
    "true_systolic_mm_hg", "true_diastolic_mm_hg", "label", "true_category", "episode",
    "condition", "age", "sex",
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

# Device measuring range (mmHg): a cuff never reports outside it.
_SYSTOLIC_RANGE = (50, 260)
_DIASTOLIC_RANGE = (25, 160)

# Counter-based random streams: one constant per independent quantity.
_S_DAY_SYS, _S_DAY_DIA, _S_TIME, _S_NOISE_SYS, _S_NOISE_DIA = 1, 2, 3, 4, 5
_S_EPISODE, _S_EP_START, _S_EP_LENGTH, _S_EP_SYS, _S_EP_DIA = 6, 7, 8, 9, 10
_S_ID_HI, _S_ID_LO = 11, 12

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


@dataclass
class SimulatedReading:
    """One reading: the measured (integer) values and the noise-free truth behind them.

    ``label`` is True when the *true* values cross the clinical thresholds;
    ``episode`` names the acute episode in progress, or is None.
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


def _draw_ages(rng: np.random.Generator, n: int) -> np.ndarray:
    bins = rng.choice(len(_AGE_WEIGHTS), size=n, p=_AGE_WEIGHTS)
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

class Cohort:
    """A deterministic synthetic cohort and its stream of readings.

    Reading ``i`` belongs to patient ``i % n_patients`` (patients interleave) and is that
    patient's ``k = i // n_patients``-th reading, taken at a random moment of the slot
    ``[start + k*interval, start + (k+1)*interval)``: timestamps strictly increase per
    patient, and whole seconds when ``interval`` is a whole number of seconds.

    Raises:
        ValueError: ``n_patients`` < 1, ``interval`` under 1 ms, or ``start`` naive.
    """

    def __init__(self, n_patients: int, seed: int, start: datetime | None = None, *,
                 interval: timedelta = DEFAULT_INTERVAL) -> None:
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
        self.start = start.astimezone(timezone.utc)
        self.interval = interval
        self._interval_ms = interval_ms
        self._start_ms = round(self.start.timestamp() * 1000)
        self._key = _key_of("physiology", seed)
        self._id_key = _key_of("ids", seed, n_patients, self._start_ms, interval_ms)
        self._draw_patients()

    def _draw_patients(self) -> None:
        rng = np.random.default_rng([self.seed, 0x5EED])
        n = self.n_patients
        self._patient_ids = np.array([str(_uuid4(rng.bytes(16))) for _ in range(n)])
        self._age = _draw_ages(rng, n)
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

    @cached_property
    def patients(self) -> list[SimulatedPatient]:
        """The patients, with Faker identities (built on first access: Faker is slow)."""
        from faker import Faker

        fake = Faker("en_US")
        fake.seed_instance(self.seed)
        reference = self.start.date()
        patients = []
        for i in range(self.n_patients):
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
            ))
        return patients

    @property
    def patient_ids(self) -> list[str]:
        """Patient ids in cohort order (cheap: no Faker)."""
        return self._patient_ids.tolist()

    def readings(self, n: int, *, first: int = 0, chunk: int = 50_000) -> Iterator[SimulatedReading]:
        """Readings ``first .. first+n-1`` one by one (same values as ``readings_frame``)."""
        for offset in range(0, n, chunk):
            frame = self.readings_frame(min(chunk, n - offset), first=first + offset)
            effective = frame["effective"].dt.to_pydatetime()
            columns = [frame[c].to_numpy() for c in FRAME_COLUMNS]
            for row in range(len(frame)):
                (obs_id, patient_id, _, sys_, dia, true_sys, true_dia, label, category,
                 episode, *_rest) = (col[row] for col in columns)
                yield SimulatedReading(
                    observation_id=str(obs_id), patient_id=str(patient_id), effective=effective[row],
                    systolic_mm_hg=int(sys_), diastolic_mm_hg=int(dia),
                    true_systolic_mm_hg=float(true_sys), true_diastolic_mm_hg=float(true_dia),
                    label=bool(label), true_category=str(category), episode=str(episode) or None,
                )

    def readings_frame(self, n: int, *, first: int = 0) -> pd.DataFrame:
        """Readings ``first .. first+n-1`` as a DataFrame with ``FRAME_COLUMNS``, vectorised.

        Columns and dtypes are the dataset contract's (``bp_core.simulation.datasets``): ``label`` is
        0/1 int64, ``episode`` is '' when none, ``effective`` is tz-aware UTC, strings are
        pandas' (Arrow-backed) ``str``. ``frame.attrs`` holds ``seed``, ``patients``,
        ``start`` and ``interval_s``.

        Raises:
            ValueError: ``n`` or ``first`` is negative.
        """
        import pandas as pd
        import pyarrow as pa

        frame = self.readings_table(n, first=first).to_pandas(
            types_mapper={pa.string(): pd.StringDtype("pyarrow", na_value=np.nan)}.get)
        frame.attrs.update(seed=self.seed, patients=self.n_patients, start=self.start.isoformat(),
                           interval_s=self._interval_ms / 1000)
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
        awake_sys = self._baseline_sys[patient] + self._day_sd_sys[patient] * z_sys
        awake_dia = self._baseline_dia[patient] + self._day_sd_dia[patient] * z_dia
        dip = 1.0 - self._dip[patient] * _night_weight(hour)
        true_sys, true_dia = awake_sys * dip, awake_dia * dip
        episode_code = self._apply_episodes(patient, day, hour, true_sys, true_dia)

        n_sys = _normal(self._key, _S_NOISE_SYS, index)
        n_dia = _correlated(n_sys, _normal(self._key, _S_NOISE_DIA, index), _NOISE_RHO)
        measured_sys = np.clip(np.rint(true_sys + _NOISE_SD[0] * n_sys), *_SYSTOLIC_RANGE).astype(np.int64)
        measured_dia = np.clip(np.rint(true_dia + _NOISE_SD[1] * n_dia), *_DIASTOLIC_RANGE).astype(np.int64)

        def vocabulary(words, codes):
            return pa.array(list(words), type=pa.string()).take(pa.array(codes))

        patient_arrow = pa.array(self._patient_ids.tolist(), type=pa.string())
        return {
            "observation_id": _uuid_strings(_hash(self._id_key, _S_ID_HI, index),
                                            _hash(self._id_key, _S_ID_LO, index)),
            "patient_id": patient_arrow.take(pa.array(patient)),
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
        }

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
