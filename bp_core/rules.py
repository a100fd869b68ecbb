"""Clinical rules: anomaly thresholds, context anomalies and AHA 2017 categories.

Pure functions, scalar and vectorised (tests check both agree). Anomaly: systolic above
140 or below 90, diastolic above 90 or below 60 (strict, configurable); with a baseline,
``rise_from_baseline`` / ``drop_from_baseline`` at 20 systolic or 10 diastolic (Freeman
et al. 2011; Jordan et al. 2023). Categories: crisis > stage 2 > stage 1 > hypotension >
elevated > normal, first match wins. Bounds, precedence and sources:
docs/internals.md#clinical-rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bp_core.errors import UsageError

NORMAL = "normal"
ELEVATED = "elevated"
STAGE_1 = "hypertension_stage_1"
STAGE_2 = "hypertension_stage_2"
CRISIS = "hypertensive_crisis"
HYPOTENSION = "hypotension"
CATEGORIES = (NORMAL, ELEVATED, STAGE_1, STAGE_2, CRISIS, HYPOTENSION)
CATEGORY_LABELS = {NORMAL: "Normal", ELEVATED: "Elevated", STAGE_1: "Hypertension stage 1",
                   STAGE_2: "Hypertension stage 2", CRISIS: "Hypertensive crisis", HYPOTENSION: "Hypotension"}

RISE_FROM_BASELINE = "rise_from_baseline"
DROP_FROM_BASELINE = "drop_from_baseline"
ANOMALY_TYPES = ("systolic_high", "systolic_low", "diastolic_high", "diastolic_low", RISE_FROM_BASELINE,
                 DROP_FROM_BASELINE)

# AHA 2017 bounds (mmHg)
CRISIS_SYSTOLIC_ABOVE = 180.0
CRISIS_DIASTOLIC_ABOVE = 120.0
STAGE_2_SYSTOLIC_FROM = 140.0
STAGE_2_DIASTOLIC_FROM = 90.0
STAGE_1_SYSTOLIC_FROM = 130.0
STAGE_1_DIASTOLIC_FROM = 80.0
ELEVATED_SYSTOLIC_FROM = 120.0
HYPOTENSION_SYSTOLIC_BELOW = 90.0
HYPOTENSION_DIASTOLIC_BELOW = 60.0


@dataclass(frozen=True)
class Thresholds:
    """Anomaly thresholds in mmHg; a reading is anomalous strictly outside [low, high], or
    at least a delta away from its baseline.

    Raises:
        UsageError: a low threshold is not below its high one, or a delta is not positive.
    """

    systolic_high: float = 140.0
    systolic_low: float = 90.0
    diastolic_high: float = 90.0
    diastolic_low: float = 60.0
    baseline_systolic_delta: float = 20.0
    baseline_diastolic_delta: float = 10.0

    def __post_init__(self) -> None:
        for name in ("baseline_systolic_delta", "baseline_diastolic_delta"):
            if not getattr(self, name) > 0:
                raise UsageError(f"{name.replace('_', ' ')} must be positive, got {getattr(self, name):g}")
        if not self.systolic_low < self.systolic_high:
            raise UsageError(f"systolic low threshold ({self.systolic_low:g}) must be below "
                             f"the high one ({self.systolic_high:g})")
        if not self.diastolic_low < self.diastolic_high:
            raise UsageError(f"diastolic low threshold ({self.diastolic_low:g}) must be below "
                             f"the high one ({self.diastolic_high:g})")

    @classmethod
    def from_settings(cls, settings) -> "Thresholds":
        """The thresholds of a ``bp_core.settings.Settings`` (``BP_SYSTOLIC_HIGH`` etc.).

        Raises:
            UsageError: a low threshold is not below its high one.
        """
        return cls(systolic_high=settings.systolic_high, systolic_low=settings.systolic_low,
                   diastolic_high=settings.diastolic_high, diastolic_low=settings.diastolic_low,
                   baseline_systolic_delta=settings.baseline_systolic_delta,
                   baseline_diastolic_delta=settings.baseline_diastolic_delta)


DEFAULT_THRESHOLDS = Thresholds()


def anomaly_types(systolic: float, diastolic: float, thresholds: Thresholds = DEFAULT_THRESHOLDS,
                  baseline_systolic: float | None = None, baseline_diastolic: float | None = None) -> list[str]:
    """The thresholds a reading crosses, in the order of ``ANOMALY_TYPES`` (empty if none).

    ``baseline_systolic`` / ``baseline_diastolic``: the reading's baseline (None or NaN
    when it has none: no context anomaly).
    """
    types = []
    if systolic > thresholds.systolic_high:
        types.append("systolic_high")
    if systolic < thresholds.systolic_low:
        types.append("systolic_low")
    if diastolic > thresholds.diastolic_high:
        types.append("diastolic_high")
    if diastolic < thresholds.diastolic_low:
        types.append("diastolic_low")
    # NaN compares false: a missing baseline (None -> NaN) raises nothing.
    bs = math.nan if baseline_systolic is None else baseline_systolic
    bd = math.nan if baseline_diastolic is None else baseline_diastolic
    if systolic >= bs + thresholds.baseline_systolic_delta or diastolic >= bd + thresholds.baseline_diastolic_delta:
        types.append(RISE_FROM_BASELINE)
    if systolic <= bs - thresholds.baseline_systolic_delta or diastolic <= bd - thresholds.baseline_diastolic_delta:
        types.append(DROP_FROM_BASELINE)
    return types


def is_rule_anomaly(systolic: float, diastolic: float, thresholds: Thresholds = DEFAULT_THRESHOLDS,
                    baseline_systolic: float | None = None, baseline_diastolic: float | None = None) -> bool:
    """True when the reading crosses any threshold (with a baseline: or moves a delta from it)."""
    return bool(anomaly_types(systolic, diastolic, thresholds, baseline_systolic, baseline_diastolic))


def category(systolic: float, diastolic: float) -> str:
    """The AHA 2017 category of one reading (one of ``CATEGORIES``; precedence above)."""
    if systolic > CRISIS_SYSTOLIC_ABOVE or diastolic > CRISIS_DIASTOLIC_ABOVE:
        return CRISIS
    if systolic >= STAGE_2_SYSTOLIC_FROM or diastolic >= STAGE_2_DIASTOLIC_FROM:
        return STAGE_2
    if systolic >= STAGE_1_SYSTOLIC_FROM or diastolic >= STAGE_1_DIASTOLIC_FROM:
        return STAGE_1
    if systolic < HYPOTENSION_SYSTOLIC_BELOW or diastolic < HYPOTENSION_DIASTOLIC_BELOW:
        return HYPOTENSION
    if systolic >= ELEVATED_SYSTOLIC_FROM:
        return ELEVATED
    return NORMAL


_CATEGORY_NAMES = np.array(CATEGORIES)
_CATEGORY_INDEX = {name: index for index, name in enumerate(CATEGORIES)}


def category_codes(systolic: np.ndarray, diastolic: np.ndarray) -> np.ndarray:
    """``category`` for arrays of readings: a numpy array of category names (``<U20``)."""
    systolic = np.asarray(systolic, dtype=np.float64)
    diastolic = np.asarray(diastolic, dtype=np.float64)
    # np.select takes the first true condition: the same precedence as ``category``.
    conditions = [
        (systolic > CRISIS_SYSTOLIC_ABOVE) | (diastolic > CRISIS_DIASTOLIC_ABOVE),
        (systolic >= STAGE_2_SYSTOLIC_FROM) | (diastolic >= STAGE_2_DIASTOLIC_FROM),
        (systolic >= STAGE_1_SYSTOLIC_FROM) | (diastolic >= STAGE_1_DIASTOLIC_FROM),
        (systolic < HYPOTENSION_SYSTOLIC_BELOW) | (diastolic < HYPOTENSION_DIASTOLIC_BELOW),
        systolic >= ELEVATED_SYSTOLIC_FROM,
    ]
    choices = [_CATEGORY_INDEX[name] for name in (CRISIS, STAGE_2, STAGE_1, HYPOTENSION, ELEVATED)]
    return _CATEGORY_NAMES[np.select(conditions, choices, default=_CATEGORY_INDEX[NORMAL])]


def rule_anomaly_mask(systolic: np.ndarray, diastolic: np.ndarray, thresholds: Thresholds = DEFAULT_THRESHOLDS,
                      baseline_systolic: np.ndarray | None = None,
                      baseline_diastolic: np.ndarray | None = None) -> np.ndarray:
    """``is_rule_anomaly`` for arrays of readings: a boolean numpy array."""
    return anomaly_type_codes(systolic, diastolic, thresholds, baseline_systolic, baseline_diastolic) != 0


def anomaly_type_codes(systolic: np.ndarray, diastolic: np.ndarray, thresholds: Thresholds = DEFAULT_THRESHOLDS,
                       baseline_systolic: np.ndarray | None = None,
                       baseline_diastolic: np.ndarray | None = None) -> np.ndarray:
    """``anomaly_types`` for arrays of readings, as small integer codes (uint8).

    Bit ``i`` of a code is set when the reading crosses ``ANOMALY_TYPES[i]``; 0 means no
    anomaly. ``ANOMALY_TYPE_SETS[code]`` is the tuple of names, as ``anomaly_types``
    gives them. The baselines (NaN where a reading has none; None: no reading has one)
    add the context types.
    """
    systolic = np.asarray(systolic, dtype=np.float64)
    diastolic = np.asarray(diastolic, dtype=np.float64)
    codes = (systolic > thresholds.systolic_high).astype(np.uint8)
    codes |= (systolic < thresholds.systolic_low).astype(np.uint8) << 1
    codes |= (diastolic > thresholds.diastolic_high).astype(np.uint8) << 2
    codes |= (diastolic < thresholds.diastolic_low).astype(np.uint8) << 3
    if baseline_systolic is not None or baseline_diastolic is not None:
        missing = np.full(systolic.shape, np.nan)
        bs = missing if baseline_systolic is None else np.asarray(baseline_systolic, dtype=np.float64)
        bd = missing if baseline_diastolic is None else np.asarray(baseline_diastolic, dtype=np.float64)
        ds, dd = thresholds.baseline_systolic_delta, thresholds.baseline_diastolic_delta
        codes |= ((systolic >= bs + ds) | (diastolic >= bd + dd)).astype(np.uint8) << 4
        codes |= ((systolic <= bs - ds) | (diastolic <= bd - dd)).astype(np.uint8) << 5
    return codes


ANOMALY_TYPE_SETS: tuple[tuple[str, ...], ...] = tuple(
    tuple(name for bit, name in enumerate(ANOMALY_TYPES) if code >> bit & 1) for code in range(1 << len(ANOMALY_TYPES)))
