"""The promotion gate's rules: pure comparisons of hold-out figures and live evidence.

A challenger is judged against the champion, or against the rules alone when there is no
champion (the rules are the champion of last resort). Every comparison is a ``Check``
(what was compared, both values, the requirement, passed or not), so the decision record
holds every figure it used. ``judge`` turns the checks into a decision:

- no champion: PR AUC above the rules', served F1 at least the rules', Brier and served
  alert rate as against a champion (the rules' own Brier and alert rate);
- a champion: PR AUC gain >= margin, crisis/hypotension recall kept, served alert rate
  within the band, Brier not worse by more than the margin; then, when shadow evidence
  is required, enough live readings (else ``deferred``) and a live served-alert-rate
  change within the band.

"Served" is what the consumer routes on: rules OR model probability >= threshold.
No I/O here; ``bp_core.model.promotion`` gathers the figures and records the decision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PRIMARY_METRIC = "pr_auc"
GUARDED_RECALLS: tuple[str, ...] = ("crisis_recall", "hypotension_recall")  # the dangerous tails
MIN_RECALL_TOLERANCE = 0.002
DEFAULT_MARGIN = 0.002
SERVED_METRICS: tuple[str, ...] = ("served_f1", "served_precision", "served_recall", "served_alert_rate")


@dataclass(frozen=True)
class GateParameters:
    """What the gate requires; defaults from the settings (``BP_GATE_*``, ``BP_MODEL_THRESHOLD``)."""

    threshold: float = 0.5             # BP_MODEL_THRESHOLD: the consumer routes at it
    margin: float = DEFAULT_MARGIN     # minimum PR AUC gain over the champion
    alert_rate_band: float = 0.10      # BP_GATE_ALERT_RATE_BAND, relative
    brier_margin: float = 0.01         # BP_GATE_BRIER_MARGIN, absolute
    min_shadow_readings: int = 5000    # BP_GATE_MIN_SHADOW_READINGS; 0 turns live evidence off

    @classmethod
    def from_settings(cls, settings, *, margin: float = DEFAULT_MARGIN) -> "GateParameters":
        return cls(threshold=settings.model_threshold, margin=margin,
                   alert_rate_band=settings.gate_alert_rate_band, brier_margin=settings.gate_brier_margin,
                   min_shadow_readings=settings.gate_min_shadow_readings)


@dataclass(frozen=True)
class Check:
    """One comparison the gate made."""

    name: str                 # e.g. pr_auc, served_alert_rate, live_alert_rate
    passed: bool
    challenger: float | None
    reference: float | None   # the champion's (or the rules') figure
    requirement: str          # what the challenger needed, in words and numbers

    def line(self) -> str:
        """``name challenger vs reference``, and for a failed check why it fails."""
        text = f"{self.name} {_fmt(self.challenger)} vs {_fmt(self.reference)}"
        return text if self.passed else f"{text} fails ({self.requirement})"


@dataclass(frozen=True)
class LiveEvidence:
    """The shadow-scoring totals the gate needs (see ``bp_core.model.shadow``)."""

    readings: int
    champion_alert_rate: float
    challenger_alert_rate: float


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4f}"


def served_flags(rule_flags: np.ndarray, probabilities: np.ndarray | None, threshold: float) -> np.ndarray:
    """What the consumer alerts on: the rules' flag OR P(anomaly) >= threshold (bool array).

    Args:
        rule_flags: the rules' flags (bool or 0/1), shape (n,).
        probabilities: the model's P(anomaly), shape (n,); None: rules only.
        threshold: the serving threshold.
    """
    flags = np.asarray(rule_flags).astype(bool, copy=False)
    if probabilities is None:
        return flags
    return flags | (np.asarray(probabilities, dtype=np.float64) >= threshold)


def served_metrics(y_true: np.ndarray, rule_flags: np.ndarray, probabilities: np.ndarray | None,
                   threshold: float) -> dict[str, float]:
    """F1, precision, recall and alert rate of the served decision against the truth.

    Returns:
        ``served_f1``, ``served_precision``, ``served_recall``, ``served_alert_rate``.
    """
    from bp_core.model.metrics import classification_metrics

    flags = served_flags(rule_flags, probabilities, threshold).astype(np.float64)
    figures = classification_metrics(y_true, flags, threshold=0.5)
    return {"served_f1": figures["f1"], "served_precision": figures["precision"],
            "served_recall": figures["recall"], "served_alert_rate": figures["flagged_rate"]}


def relative_change(new: float, old: float) -> float:
    """(new - old) / old; 0 when both are 0, infinite when only ``old`` is."""
    if old == 0:
        return 0.0 if new == 0 else math.inf
    return (new - old) / old


def recall_tolerance(group_size: int) -> float:
    """Allowed recall drop on a subgroup: max(0.002, one reading of the group)."""
    return max(MIN_RECALL_TOLERANCE, 1.0 / group_size) if group_size else math.inf


def _band_check(name: str, new: float, old: float, band: float, whose: str) -> Check:
    change = relative_change(new, old)
    return Check(name, abs(change) <= band, new, old,
                 f"within ±{band:.0%} of {whose}; change {change:+.1%}")


def _brier_check(new: float, old: float, margin: float, whose: str) -> Check:
    return Check("brier", new <= old + margin, new, old, f"<= {old + margin:.4f} ({whose} + {margin:g})")


def versus_rules(challenger: dict[str, float], rules: dict[str, float], params: GateParameters) -> list[Check]:
    """The checks of a first challenger against the rules alone, on one hold-out.

    Args:
        challenger: the challenger's figures (``classification_metrics`` + ``served_*``).
        rules: the rules' figures (their served decision is their flags).
        params: the gate's parameters.
    """
    return [
        Check(PRIMARY_METRIC, challenger[PRIMARY_METRIC] > rules[PRIMARY_METRIC],
              challenger[PRIMARY_METRIC], rules[PRIMARY_METRIC], "above the rules'"),
        Check("served_f1", challenger["served_f1"] >= rules["served_f1"], challenger["served_f1"],
              rules["served_f1"], "rules OR model at the threshold: at least the rules' own F1"),
        _brier_check(challenger["brier"], rules["brier"], params.brier_margin, "the rules'"),
        _band_check("served_alert_rate", challenger["served_alert_rate"], rules["served_alert_rate"],
                    params.alert_rate_band, "the rules'"),
    ]


def versus_champion(challenger: dict[str, float], champion: dict[str, float], params: GateParameters,
                    group_sizes: dict[str, int]) -> list[Check]:
    """The checks of a challenger against the champion, on one hold-out.

    Args:
        challenger: the challenger's figures (``classification_metrics`` + ``served_*``).
        champion: the champion's figures on the same hold-out.
        params: the gate's parameters.
        group_sizes: hold-out readings behind each guarded recall (``crisis_recall``...).
    """
    gain = challenger[PRIMARY_METRIC] - champion[PRIMARY_METRIC]
    checks = [Check(PRIMARY_METRIC, gain >= params.margin, challenger[PRIMARY_METRIC], champion[PRIMARY_METRIC],
                    f"gain {gain:+.4f} >= margin {params.margin:g}")]  # also false for nan
    for key in GUARDED_RECALLS:
        new, old = challenger.get(key, math.nan), champion.get(key, math.nan)
        if math.isnan(new) or math.isnan(old):
            checks.append(Check(key, True, new, old, "no such readings in the hold-out: nothing to guard"))
            continue
        tolerance = recall_tolerance(group_sizes.get(key, 0))
        checks.append(Check(key, new >= old - tolerance, new, old, f"drop at most {tolerance:.4f}"))
    checks.append(_band_check("served_alert_rate", challenger["served_alert_rate"], champion["served_alert_rate"],
                              params.alert_rate_band, "the champion's"))
    checks.append(_brier_check(challenger["brier"], champion["brier"], params.brier_margin, "the champion's"))
    return checks


def versus_live(evidence: LiveEvidence, params: GateParameters) -> tuple[bool, list[Check]]:
    """The shadow-evidence checks; the first value is False when there is not enough yet.

    Args:
        evidence: totals of the challenger's shadow scoring beside the serving champion.
        params: the gate's parameters (``min_shadow_readings`` > 0).
    """
    enough = evidence.readings >= params.min_shadow_readings
    checks = [Check("shadow_readings", enough, float(evidence.readings), float(params.min_shadow_readings),
                    f"at least {params.min_shadow_readings:,} live readings shadow-scored")]
    if enough:
        checks.append(_band_check("live_alert_rate", evidence.challenger_alert_rate, evidence.champion_alert_rate,
                                  params.alert_rate_band, "the champion's"))
    return enough, checks


def judge(challenger: dict[str, float], champion: dict[str, float] | None, rules: dict[str, float],
          params: GateParameters, group_sizes: dict[str, int],
          evidence: LiveEvidence | None = None) -> tuple[str, str, list[Check]]:
    """The gate's decision on one challenger.

    Args:
        challenger: its hold-out figures (``classification_metrics`` + ``served_*``).
        champion: the champion's, or None when there is no champion.
        rules: the rules' alone.
        params: the gate's parameters.
        group_sizes: hold-out readings behind each guarded recall.
        evidence: the live shadow evidence (None: none published yet); used only with a
            champion and ``params.min_shadow_readings`` > 0.
    Returns:
        (decision, reason, checks): decision is ``promoted``, ``rejected`` or ``deferred``.
    """
    if champion is None:
        checks = versus_rules(challenger, rules, params)
        failed = [c for c in checks if not c.passed]
        if failed:
            return "rejected", ("no champion, and the challenger does not beat the rules alone, which stay the "
                                "champion of last resort: " + "; ".join(c.line() for c in failed)), checks
        return "promoted", ("no champion; the challenger beats the rules alone on the hold-out: "
                            + "; ".join(c.line() for c in checks)), checks
    checks = versus_champion(challenger, champion, params, group_sizes)
    failed = [c for c in checks if not c.passed]
    if failed:
        return "rejected", "on the hold-out: " + "; ".join(c.line() for c in failed), checks
    held_out = (f"on the hold-out {PRIMARY_METRIC} gain {challenger[PRIMARY_METRIC] - champion[PRIMARY_METRIC]:+.4f}, "
                f"served alert rate and Brier within limits, crisis and hypotension recall kept")
    if params.min_shadow_readings <= 0:
        return "promoted", held_out + "; live evidence not required (BP_GATE_MIN_SHADOW_READINGS=0)", checks
    enough, live = versus_live(evidence or LiveEvidence(0, math.nan, math.nan), params)
    checks += live
    if not enough:
        readings = evidence.readings if evidence else 0
        return "deferred", (f"{held_out}; waiting for live evidence: {readings:,} of "
                            f"{params.min_shadow_readings:,} readings shadow-scored so far"), checks
    if not live[-1].passed:
        return "rejected", f"{held_out}; but on live traffic {live[-1].line()}", checks
    return "promoted", f"{held_out}; on live traffic {live[-1].line()}", checks
