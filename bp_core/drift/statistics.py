"""Drift statistics: effect sizes with thresholds, on weighted samples; pure, no I/O.

A ``Sample`` holds readings as weighted rows (a row may stand for many identical
readings: Elasticsearch hands back counts per distinct value, not documents), one
column per compared quantity, and how many distinct patients they came from.

Two statistics (reasons and sources in docs/drift.md):

- a numeric column (each model feature, the model's probability): the Wasserstein
  distance between the live and the reference distributions divided by the reference's
  standard deviation (``wasserstein_normed``): 0.1 means the mass moved by a tenth of a
  standard deviation on average;
- the alert rate: the relative difference ``|live - reference| / reference``
  (``relative_difference``).

Readings of one patient are correlated, so a window of N readings from P patients
carries about P independent draws of the patient mix, not N. A fixed threshold would
call a small window (few patients) drifted by who happened to be in it. Each threshold
is therefore ``max(effect, floor)``: ``effect`` the smallest change worth a look, and
``floor`` ``Z_FLOOR`` standard errors of the difference of two means drawn from the
reference's own between- and within-patient spread with the window's and the
reference's patient and reading counts. With large windows the effect decides; with
small ones the noise floor does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

WASSERSTEIN = "wasserstein_normed"
RELATIVE_DIFFERENCE = "relative_difference"

EFFECT_THRESHOLD = 0.1        # Evidently's default for Wasserstein / reference SD on large numeric samples
ALERT_RATE_THRESHOLD = 0.10   # relative change of the alert rate; the promotion gate's band
Z_FLOOR = 4.0                 # standard errors of the noise floor (many comparisons per check)
ALERT_RATE = "alert_rate"
PROBABILITY = "model_probability"


@dataclass
class Sample:
    """Weighted readings: ``columns[name][i]`` is row i's value, ``weights[i]`` its count.

    ``alerts`` is 1.0 where the reading was routed as an anomaly, else 0.0 (per row).
    ``patients`` counts the distinct patients the readings came from.
    """

    columns: dict[str, np.ndarray]
    weights: np.ndarray
    alerts: np.ndarray
    patients: int
    _orders: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def readings(self) -> int:
        return int(self.weights.sum())

    def alert_rate(self) -> float:
        total = self.weights.sum()
        return float(np.dot(self.alerts, self.weights) / total) if total else float("nan")

    def distinct(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Column ``name``'s distinct known values and their total weight (``collapse``)."""
        if name not in self._orders:
            self._orders[name] = np.argsort(self.columns[name], kind="stable")
        return collapse(self.columns[name], self.weights, self._orders[name])

    def where(self, mask: np.ndarray, patients: int) -> "Sample":
        """The rows where ``mask`` holds, from ``patients`` distinct patients. The columns
        already sorted here stay sorted there without sorting again (a fleet's rows)."""
        renumber = np.cumsum(mask) - 1
        orders = {name: renumber[order[mask[order]]] for name, order in self._orders.items()}
        return Sample({name: values[mask] for name, values in self.columns.items()}, self.weights[mask],
                      self.alerts[mask], patients, orders)

    @staticmethod
    def concat(samples: list["Sample"], patients: int) -> "Sample":
        """Rows of several samples together (their patients may overlap: pass the union's count)."""
        names = samples[0].columns.keys()
        return Sample({name: np.concatenate([s.columns[name] for s in samples]) for name in names},
                      np.concatenate([s.weights for s in samples]),
                      np.concatenate([s.alerts for s in samples]), patients)


@dataclass(frozen=True)
class Spread:
    """How one quantity varies in the reference: overall, between and within patients."""

    total_sd: float
    between_sd: float
    within_sd: float


@dataclass
class Reference:
    """The champion's training data as a ``Sample`` plus each column's ``Spread``."""

    sample: Sample
    spreads: dict[str, Spread] = field(default_factory=dict)
    _distinct: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    def distinct(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """A column's distinct known values and their weights (computed once: compared per fleet)."""
        if name not in self._distinct:
            self._distinct[name] = collapse(self.sample.columns[name], self.sample.weights)
        return self._distinct[name]


@dataclass(frozen=True)
class Comparison:
    """One statistic for one quantity: the JSON report's per-feature entry."""

    statistic: str
    score: float
    threshold: float
    drift: bool

    def as_dict(self) -> dict:
        return {"statistic": self.statistic, "score": _round(self.score), "threshold": _round(self.threshold),
                "drift": self.drift}


def _round(value: float) -> float | None:
    return None if value != value else round(float(value), 6)


def weighted_sd(values: np.ndarray, weights: np.ndarray) -> float:
    total = weights.sum()
    if not total:
        return float("nan")
    mean = np.dot(values, weights) / total
    return float(np.sqrt(np.dot((values - mean) ** 2, weights) / total))


def spreads_by_patient(values: np.ndarray, patient_codes: np.ndarray) -> Spread:
    """The overall SD of one quantity, the SD of its per-patient means, and the pooled
    SD of readings around their patient's mean (one reading per row, unweighted).

    Args:
        values: one value per reading.
        patient_codes: the reading's patient as a small integer (0..P-1).
    """
    counts = np.bincount(patient_codes)
    present = counts > 0
    means = np.bincount(patient_codes, weights=values)[present] / counts[present]
    residual = values - (np.bincount(patient_codes, weights=values) / np.maximum(counts, 1))[patient_codes]
    return Spread(total_sd=float(values.std()), between_sd=float(means.std()),
                  within_sd=float(residual.std()))


def wasserstein_normed(live: tuple[np.ndarray, np.ndarray], reference: tuple[np.ndarray, np.ndarray],
                       reference_sd: float) -> float:
    """Wasserstein-1 distance between two weighted samples ``(values, weights)``, in
    reference SDs (``scipy.stats.wasserstein_distance``).

    A constant reference (SD 0) gives 0 when live is the same constant, else infinity;
    an empty side gives NaN.
    """
    from scipy.stats import wasserstein_distance

    if not (live[1].sum() > 0 and reference[1].sum() > 0):
        return float("nan")
    distance = float(wasserstein_distance(live[0], reference[0], live[1], reference[1]))
    if reference_sd > 0:
        return distance / reference_sd
    return 0.0 if distance == 0 else float("inf")


def collapse(values: np.ndarray, weights: np.ndarray,
             order: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The distinct known (finite) values, ascending, and their total weight: fewer points
    to sort. ``order``: the indices that sort ``values``, when already known."""
    order = np.argsort(values, kind="stable") if order is None else order
    ordered, ordered_weights = values[order], weights[order]
    known = np.isfinite(ordered)
    ordered, ordered_weights = ordered[known], ordered_weights[known]
    if not len(ordered):
        return ordered, ordered_weights.astype(np.float64)
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    return ordered[starts], np.add.reduceat(ordered_weights.astype(np.float64), starts)


def standard_error(spread: Spread, live: Sample, reference: Sample) -> float:
    """SE of the difference of the mean between two samples of the reference's world,
    with the live and reference patient and reading counts."""
    patients = 1 / max(live.patients, 1) + 1 / max(reference.patients, 1)
    readings = 1 / max(live.readings, 1) + 1 / max(reference.readings, 1)
    return float(np.sqrt(spread.between_sd ** 2 * patients + spread.within_sd ** 2 * readings))


def compare_column(name: str, live: Sample, reference: Reference) -> Comparison:
    """``wasserstein_normed`` of one column, against ``max(EFFECT_THRESHOLD, noise floor)``."""
    ref = reference.sample
    spread = reference.spreads[name]
    score = wasserstein_normed(live.distinct(name), reference.distinct(name), spread.total_sd)
    floor = (Z_FLOOR * standard_error(spread, _known(live, name), _known(ref, name)) / spread.total_sd
             if spread.total_sd > 0 else 0.0)
    threshold = max(EFFECT_THRESHOLD, floor)
    return Comparison(WASSERSTEIN, score, threshold, bool(score > threshold))  # NaN: no drift claimed


def _known(sample: Sample, name: str) -> Sample:
    """The counts of the rows where column ``name`` is known (a feature of a reading's
    history is not where the history is missing), from at most as many patients as
    readings: what ``standard_error`` needs, without the columns."""
    known = np.isfinite(sample.columns[name])
    if known.all():
        return sample
    weights = sample.weights[known]
    return Sample({}, weights, sample.alerts[known], int(min(sample.patients, weights.sum())))


def compare_alert_rate(live: Sample, reference: Reference) -> Comparison:
    """``relative_difference`` of the alert rate, against ``max(ALERT_RATE_THRESHOLD, noise floor)``."""
    ref = reference.sample
    ref_rate = ref.alert_rate()
    if not ref_rate > 0:
        # No alert at all in the reference: any live alert is a change of kind.
        live_rate = live.alert_rate()
        return Comparison(RELATIVE_DIFFERENCE, 0.0 if live_rate == 0 else float("inf"), ALERT_RATE_THRESHOLD,
                          bool(live_rate > 0))
    score = abs(live.alert_rate() - ref_rate) / ref_rate
    floor = Z_FLOOR * standard_error(reference.spreads[ALERT_RATE], live, ref) / ref_rate
    threshold = max(ALERT_RATE_THRESHOLD, floor)
    return Comparison(RELATIVE_DIFFERENCE, score, threshold, bool(score > threshold))


def compare(live: Sample, reference: Reference, names: list[str]) -> dict[str, Comparison]:
    """Every named numeric column, then ``alert_rate``, live against reference."""
    result = {name: compare_column(name, live, reference) for name in names}
    result[ALERT_RATE] = compare_alert_rate(live, reference)
    return result
