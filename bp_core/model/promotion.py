"""Champion/challenger promotion and rollback, recorded in the MLflow registry.

``promote`` scores the 'challenger' and the 'champion' on ONE fresh hold-out, simulated
with a seed derived from the challenger's version (so never the training data, and
the same hold-out if the gate is re-run for that version), and moves 'champion' only if
the challenger is better:

- primary metric: PR AUC (average precision). Anomalies are a minority and the cost
  that matters is alerts: PR AUC summarises precision against recall over every
  threshold, so it moves with the false alarms clinicians would see; ROC AUC is
  dominated by the large normal class and saturates near 1 for both models, and F1
  depends on the operating threshold an operator may tune later.
- the challenger must improve PR AUC by at least ``margin`` (default 0.002: smaller
  gains are within the run-to-run noise of a 50k-reading hold-out) AND must not lose
  recall on hypertensive-crisis or hypotensive readings (the dangerous tails) beyond
  a tolerance of max(0.002, one reading of that group): a single borderline reading
  flipping is noise, a real loss is more than that.
- no champion yet: the challenger is promoted (something is better than rules-only).

Promotion sets 'previous-champion' to the old champion, then 'champion' to the
challenger. The decision, both sets of figures and the reason are recorded as tags of
the challenger version (``promotion.*``). ``rollback`` points 'champion' back at
'previous-champion' and removes that alias, so a second rollback is an error rather
than a flip back to the model just rolled back.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from bp_core.errors import ModelUnavailable
from bp_core.model.metrics import CRISIS_CATEGORY, HYPOTENSION_CATEGORY
from bp_core.settings import Settings

log = logging.getLogger(__name__)

PRIMARY_METRIC = "pr_auc"
GUARDED_RECALLS: tuple[tuple[str, str], ...] = (
    ("crisis_recall", CRISIS_CATEGORY),
    ("hypotension_recall", HYPOTENSION_CATEGORY),
)
MIN_RECALL_TOLERANCE = 0.002
HOLDOUT_SEED_BASE = 7_000_000  # far from the small seeds used for training data
READINGS_PER_HOLDOUT_PATIENT = 100


@dataclass(frozen=True)
class PromotionDecision:
    """The outcome of ``promote`` or ``rollback``."""

    decision: str                       # promoted | rejected | unchanged | rolled_back
    reason: str
    challenger_version: str | None
    previous_champion_version: str | None   # champion before the decision
    champion_version: str | None            # champion after the decision
    primary_metric: str = PRIMARY_METRIC
    challenger_metrics: dict[str, float] = field(default_factory=dict)
    champion_metrics: dict[str, float] | None = None
    rules_metrics: dict[str, float] | None = None
    holdout_rows: int = 0
    holdout_seed: int | None = None

    @property
    def promoted(self) -> bool:
        return self.decision == "promoted"

    def summary(self) -> list[str]:
        """Human-readable lines for the command line."""
        lines = [f"decision: {self.decision} (champion: {self.champion_version or 'none'})",
                 f"reason: {self.reason}"]
        if self.challenger_metrics:
            lines.append(f"hold-out: {self.holdout_rows:,} readings, seed {self.holdout_seed}")
            keys = (PRIMARY_METRIC, "roc_auc", "f1", "recall", "crisis_recall", "hypotension_recall", "brier")
            columns = [("challenger v" + str(self.challenger_version), self.challenger_metrics)]
            if self.champion_metrics is not None:
                columns.append((f"champion v{self.previous_champion_version}", self.champion_metrics))
            if self.rules_metrics is not None:
                columns.append(("rules only", self.rules_metrics))
            lines.append(f"{'metric':<20}" + "".join(f"{title:>16}" for title, _ in columns))
            for key in keys:
                lines.append(f"{key:<20}" + "".join(f"{_fmt(m.get(key)):>16}" for _, m in columns))
        return lines


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4f}"


def holdout_seed_for(version: str) -> int:
    """The hold-out seed of a challenger version: deterministic, distinct per version."""
    return HOLDOUT_SEED_BASE + int(version)


def recall_tolerance(group_size: int) -> float:
    """Allowed recall drop on a subgroup: max(0.002, one reading of the group)."""
    return max(MIN_RECALL_TOLERANCE, 1.0 / group_size) if group_size else math.inf


def compare(challenger: dict[str, float], champion: dict[str, float], *, margin: float,
            group_sizes: dict[str, int]) -> tuple[bool, str]:
    """Apply the promotion rule to two sets of hold-out metrics.

    Args:
        challenger: metrics of the challenger (``classification_metrics`` keys).
        champion: metrics of the champion on the same hold-out.
        margin: minimum PR AUC gain.
        group_sizes: number of hold-out readings behind each guarded recall
            (``crisis_recall``, ``hypotension_recall``).
    Returns:
        (promote?, reason).
    """
    gain = challenger[PRIMARY_METRIC] - champion[PRIMARY_METRIC]
    if not gain >= margin:  # also false for nan
        return False, (f"{PRIMARY_METRIC} {challenger[PRIMARY_METRIC]:.4f} vs champion "
                       f"{champion[PRIMARY_METRIC]:.4f}: gain {gain:+.4f} below margin {margin:g}")
    for key, _ in GUARDED_RECALLS:
        new, old = challenger.get(key, math.nan), champion.get(key, math.nan)
        if math.isnan(new) or math.isnan(old):
            continue  # no such readings in the hold-out: nothing to guard
        tolerance = recall_tolerance(group_sizes.get(key, 0))
        if new < old - tolerance:
            return False, (f"{PRIMARY_METRIC} gain {gain:+.4f} but {key} drops from {old:.4f} to {new:.4f} "
                           f"(tolerance {tolerance:.4f})")
    return True, f"{PRIMARY_METRIC} gain {gain:+.4f} >= margin {margin:g}; crisis and hypotension recall kept"


def _generate_holdout(settings: Settings, *, readings: int, seed: int, workdir: Path) -> pd.DataFrame:
    from bp_core.simulation.datasets import generate_dataset, load_dataset

    patients = max(20, readings // READINGS_PER_HOLDOUT_PATIENT)
    path = generate_dataset(workdir, patients=patients, readings=readings, seed=seed)
    return load_dataset(path)


def _group_sizes(frame: pd.DataFrame) -> dict[str, int]:
    categories = frame["true_category"].to_numpy()
    return {key: int(np.sum(categories == category)) for key, category in GUARDED_RECALLS}


def _evaluate_version(settings: Settings, version: str, frame: pd.DataFrame) -> dict[str, float]:
    from bp_core.model.registry import load_version
    from bp_core.model.training import evaluate, model_scores

    estimator = load_version(settings.mlflow_tracking_uri, settings.model_name, version, model_cache_dir(settings))
    return evaluate(model_scores(estimator, frame), frame, settings.model_threshold)


def model_cache_dir(settings: Settings) -> Path:
    """Where downloaded model versions are cached (``data_dir/mlflow/model-cache``)."""
    return Path(settings.data_dir) / "mlflow" / "model-cache"


def _tags(decision: PromotionDecision, margin: float) -> dict[str, str]:
    champion = decision.champion_metrics or {}
    tags = {
        "promotion.decision": decision.decision,
        "promotion.reason": decision.reason,
        "promotion.primary_metric": PRIMARY_METRIC,
        "promotion.margin": f"{margin:g}",
        "promotion.champion_version": decision.previous_champion_version or "none",
        "promotion.holdout_rows": str(decision.holdout_rows),
        "promotion.holdout_seed": str(decision.holdout_seed),
        "promotion.evaluated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    for key in (PRIMARY_METRIC, "roc_auc", "f1", "crisis_recall", "hypotension_recall", "brier"):
        tags[f"promotion.challenger_{key}"] = _fmt(decision.challenger_metrics.get(key))
        tags[f"promotion.champion_{key}"] = _fmt(champion.get(key)) if champion else "none"
    return tags


def promote(settings: Settings, *, margin: float = 0.002, holdout_readings: int = 50_000,
            seed: int | None = None) -> PromotionDecision:
    """Evaluate challenger and champion on one fresh hold-out; move 'champion' if better.

    Args:
        settings: tracking URI, model name, thresholds, data folder.
        margin: minimum PR AUC gain over the champion.
        holdout_readings: size of the simulated hold-out.
        seed: hold-out seed; default derived from the challenger version.
    Returns:
        The decision: ``promoted``, ``rejected``, or ``unchanged`` (the challenger is
        already champion; nothing evaluated, nothing recorded).
    Raises:
        ModelUnavailable: there is no 'challenger'.
        MlflowException: the registry failed.
    """
    from bp_core.model.registry import (CHALLENGER, CHAMPION, PREVIOUS_CHAMPION, client_for, get_alias_version,
                                        set_alias, set_version_tags)
    from bp_core.model.training import evaluate, rules_scores

    client = client_for(settings.mlflow_tracking_uri)
    name = settings.model_name
    challenger = get_alias_version(client, name, CHALLENGER)
    if challenger is None:
        raise ModelUnavailable(f"no '{CHALLENGER}' version of model {name!r}: run `bp train` first")
    champion = get_alias_version(client, name, CHAMPION)
    if champion == challenger:
        return PromotionDecision("unchanged", f"challenger version {challenger} is already champion",
                                 challenger, champion, champion)

    holdout_seed = holdout_seed_for(challenger) if seed is None else seed
    workdir = Path(tempfile.mkdtemp(prefix="holdout-", dir=_ensure(Path(settings.data_dir) / "tmp")))
    try:
        frame = _generate_holdout(settings, readings=holdout_readings, seed=holdout_seed, workdir=workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    challenger_metrics = _evaluate_version(settings, challenger, frame)
    champion_metrics = _evaluate_version(settings, champion, frame) if champion is not None else None
    rules_metrics = evaluate(rules_scores(frame, settings), frame, 0.5)

    if champion_metrics is None:
        promote_it, reason = True, "no champion yet"
    else:
        promote_it, reason = compare(challenger_metrics, champion_metrics, margin=margin,
                                     group_sizes=_group_sizes(frame))
    decision = PromotionDecision(
        decision="promoted" if promote_it else "rejected",
        reason=reason,
        challenger_version=challenger,
        previous_champion_version=champion,
        champion_version=challenger if promote_it else champion,
        challenger_metrics=challenger_metrics,
        champion_metrics=champion_metrics,
        rules_metrics=rules_metrics,
        holdout_rows=len(frame),
        holdout_seed=holdout_seed,
    )
    if promote_it:
        if champion is not None:
            set_alias(client, name, PREVIOUS_CHAMPION, champion)  # first: a crash here leaves champion intact
        set_alias(client, name, CHAMPION, challenger)
    set_version_tags(client, name, challenger, _tags(decision, margin))
    log.info("promotion of %s v%s: %s (%s)", name, challenger, decision.decision, reason)
    return decision


def rollback(settings: Settings) -> PromotionDecision:
    """Point 'champion' back at 'previous-champion' (and remove that alias).

    Args:
        settings: tracking URI and model name.
    Returns:
        A ``rolled_back`` decision.
    Raises:
        ModelUnavailable: there is no 'previous-champion' to roll back to.
        MlflowException: the registry failed.
    """
    from bp_core.model.registry import CHAMPION, PREVIOUS_CHAMPION, client_for, get_alias_version, set_alias, set_version_tags

    client = client_for(settings.mlflow_tracking_uri)
    name = settings.model_name
    previous = get_alias_version(client, name, PREVIOUS_CHAMPION)
    if previous is None:
        raise ModelUnavailable(f"no '{PREVIOUS_CHAMPION}' version of model {name!r}: nothing to roll back to")
    current = get_alias_version(client, name, CHAMPION)
    set_alias(client, name, CHAMPION, previous)
    client.delete_registered_model_alias(name, PREVIOUS_CHAMPION)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if current is not None:
        set_version_tags(client, name, current, {"promotion.rolled_back_at": now,
                                                 "promotion.rolled_back_to": previous})
    reason = f"champion rolled back from version {current or 'none'} to {previous}"
    log.info("%s: %s", name, reason)
    return PromotionDecision("rolled_back", reason, None, current, previous)


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
