"""A promotion decision: what was decided, why, and every figure behind it (pure).

``PromotionDecision`` is what ``promote``, ``promote_version`` and ``rollback`` return. It
turns into the model-version tags the registry keeps (``tags()``: the decision, its
reason and checks readable, plus ``promotion.record``, the whole decision and every
figure as JSON) and back (``from_record``), and into the table ``bp promote`` prints
(``summary()``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

from bp_core.model.gate import PRIMARY_METRIC, SERVED_METRICS, Check, GateParameters

TABLE_METRICS: tuple[str, ...] = ("pr_auc", "roc_auc", "f1", "precision", "recall", "brier", "crisis_recall",
                                  "hypotension_recall", *SERVED_METRICS)
RECORD_TAG = "promotion.record"
STATE_TAG = "promotion.state"   # pending: alias moves not confirmed yet; done: recorded (and moved)


@dataclass(frozen=True)
class PromotionDecision:
    """The outcome of ``promote``, ``promote_version`` or ``rollback``."""

    decision: str                       # promoted | rejected | deferred | unchanged | rolled_back
    reason: str
    challenger_version: str | None      # the version decided about
    previous_champion_version: str | None   # champion before the decision
    champion_version: str | None            # champion after the decision
    primary_metric: str = PRIMARY_METRIC
    challenger_metrics: dict[str, float] = field(default_factory=dict)
    champion_metrics: dict[str, float] | None = None
    rules_metrics: dict[str, float] | None = None
    holdout_rows: int = 0
    holdout_seed: int | None = None
    holdout_scenario: str | None = None
    checks: list[Check] = field(default_factory=list)
    parameters: GateParameters | None = None
    evidence: dict | None = None        # ShadowEvidence fields (bp_core.model.shadow), when read
    override: bool = False              # an operator's `bp promote --version N` (no gate)
    decision_id: str | None = None
    decided_at: str | None = None
    completed: bool = False             # finished a decision an interrupted run had recorded

    @property
    def promoted(self) -> bool:
        return self.decision == "promoted"

    def summary(self) -> list[str]:
        """Human-readable lines for the command line: decision, figures, checks, evidence."""
        lines = [f"decision: {self.decision} (champion: {_version(self.champion_version)}"
                 f"{', was ' + _version(self.previous_champion_version) if self.champion_version != self.previous_champion_version else ''})",
                 f"reason: {self.reason}"]
        if self.completed:
            lines.append(f"completed the decision recorded at {self.decided_at} by an interrupted run")
        if self.challenger_metrics:
            scenario = f", scenario {self.holdout_scenario}" if self.holdout_scenario else ""
            lines.append(f"hold-out: {self.holdout_rows:,} simulated readings, seed {self.holdout_seed}{scenario}")
            columns = [(f"challenger v{self.challenger_version}", self.challenger_metrics)]
            if self.champion_metrics is not None:
                columns.append((f"champion v{self.previous_champion_version}", self.champion_metrics))
            if self.rules_metrics is not None:
                columns.append(("rules only", self.rules_metrics))
            lines.append(f"{'metric':<20}" + "".join(f"{title:>16}" for title, _ in columns))
            for key in TABLE_METRICS:
                lines.append(f"{key:<20}" + "".join(f"{fmt(m.get(key)):>16}" for _, m in columns))
        if self.checks:
            lines.append(f"{'check':<20}{'result':>8}{'challenger':>12}{'reference':>12}  requirement")
            for check in self.checks:
                lines.append(f"{check.name:<20}{'ok' if check.passed else 'FAILS':>8}{fmt(check.challenger):>12}"
                             f"{fmt(check.reference):>12}  {check.requirement}")
        if self.parameters is not None:
            p = self.parameters
            lines.append(f"gate: threshold {p.threshold:g}, PR AUC margin {p.margin:g}, alert-rate band ±{p.alert_rate_band:.0%}, "
                         f"Brier margin {p.brier_margin:g}, shadow readings needed {p.min_shadow_readings:,}")
        if self.evidence is not None:
            from bp_core.model.shadow import ShadowEvidence

            lines += ShadowEvidence(**self.evidence).lines()
        return lines

    def record(self) -> dict:
        """The decision as JSON-safe data (NaN -> None)."""
        return _json_safe(dataclasses.asdict(self))

    @classmethod
    def from_record(cls, record: dict, **changes) -> "PromotionDecision":
        """The decision a ``record()`` describes (with ``changes`` applied)."""
        values = dict(record)
        values["checks"] = [Check(**check) for check in values.get("checks") or []]
        if values.get("parameters") is not None:
            values["parameters"] = GateParameters(**values["parameters"])
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**{k: v for k, v in values.items() if k in known}, **changes})

    def tags(self) -> dict[str, str]:
        """The model-version tags of this decision: a few readable ones, then the JSON record.

        Few on purpose: against a tracking server each tag is two requests (MLflow checks
        the model is not a prompt), and every figure is in ``promotion.record`` anyway.
        """
        checks = "\n".join(("ok: " if c.passed else "FAILS: ") + c.line() for c in self.checks)
        return {
            "promotion.id": self.decision_id or "",
            "promotion.decision": self.decision,
            "promotion.reason": self.reason,
            "promotion.decided_at": self.decided_at or "",
            "promotion.champion_version": self.previous_champion_version or "none",
            "promotion.override": str(self.override).lower(),
            "promotion.checks": checks or "none (not evaluated)",
            RECORD_TAG: json.dumps(self.record(), sort_keys=True),
        }


def fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4f}"


def _version(version: str | None) -> str:
    return f"v{version}" if version else "none (rules only)"


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value
