"""Champion/challenger promotion, operator override and rollback, recorded in the MLflow registry.

``promote`` scores the 'challenger', the 'champion' and the rules alone on ONE fresh
simulated hold-out (its seed derived from the challenger's version, its world from the
version's ``dataset.scenario`` tag, which training sets), reads the challenger's live
shadow evidence, and applies the gate's rules (``bp_core.model.gate``). Its decision is ``promoted``,
``rejected``, ``deferred`` (not enough live evidence yet) or ``unchanged`` (already
champion). A version an operator rolled back is ``rejected`` without evaluation until an
operator brings it back with ``promote_version`` (``bp promote --version N --reason``).

Every change follows one path, ``_commit``, under the registry lock
(``registry_lock.RegistryLock``):

1. finish any change an interrupted run left (the ``bp.gate.pending`` tag, below);
2. check 'champion' still points where it did when this run read it (``ChampionMoved``);
3. write the decision and all its figures as tags of the version (``promotion.*``);
4. with aliases to move: write the moves as the registered model's ``bp.gate.pending``
   tag, move the aliases, mark the version's record ``done``, delete the pending tag.

A crash before 4 leaves nothing moved (a rerun decides again); a crash during 4 leaves
the pending tag, which the next promote or rollback completes first (a rerun of a
decided promotion reports that decision, ``completed=True``). Failures before 3
(evaluation, an unloadable champion, the registry) leave the registry as it was.

Fault tests kill the process there with ``BP_CRASH_AT=promotion.after-record`` (or
``promotion.after-first-move``): ``bp_core.crashpoints``.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bp_core.crashpoints import crash_point
from bp_core.errors import ChampionMoved, ChampionUnloadable, EvaluationFailed, ModelUnavailable, UsageError
from bp_core.model.decision import RECORD_TAG, STATE_TAG, PromotionDecision
from bp_core.model.gate import DEFAULT_MARGIN, GateParameters, judge, served_metrics
from bp_core.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

log = logging.getLogger(__name__)

HOLDOUT_SEED_BASE = 7_000_000  # far from the small seeds used for training data
READINGS_PER_HOLDOUT_PATIENT = 100
PENDING_TAG = "bp.gate.pending"


def holdout_seed_for(version: str) -> int:
    """The hold-out seed of a challenger version: deterministic, distinct per version."""
    return HOLDOUT_SEED_BASE + int(version)


def model_cache_dir(settings: Settings) -> Path:
    """Where downloaded model versions are cached (``data_dir/mlflow/model-cache``)."""
    return Path(settings.data_dir) / "mlflow" / "model-cache"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------- evaluation


def _generate_holdout(settings: Settings, *, readings: int, seed: int, scenario: str | None) -> pd.DataFrame:
    from bp_core.simulation.datasets import generate_dataset, load_dataset

    workdir = Path(settings.data_dir) / "tmp"
    workdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="holdout-", dir=workdir))
    try:
        extra = {"scenario": scenario} if scenario else {}  # the world the challenger was trained for
        path = generate_dataset(workdir, patients=max(20, readings // READINGS_PER_HOLDOUT_PATIENT),
                                readings=readings, seed=seed, **extra)
        return load_dataset(path)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _group_sizes(frame: pd.DataFrame) -> dict[str, int]:
    """Hold-out readings behind each guarded recall (``gate.GUARDED_RECALLS``)."""
    from bp_core.model.metrics import CRISIS_CATEGORY, HYPOTENSION_CATEGORY

    categories = frame["true_category"].to_numpy()
    return {"crisis_recall": int(np.sum(categories == CRISIS_CATEGORY)),
            "hypotension_recall": int(np.sum(categories == HYPOTENSION_CATEGORY))}


def _figures(scores: np.ndarray | None, rule_flags: np.ndarray, frame: pd.DataFrame, threshold: float) -> dict:
    """A scorer's hold-out figures: its own (``classification_metrics``) and its served decision's."""
    from bp_core.model.training import evaluate

    own = evaluate(rule_flags if scores is None else scores, frame, 0.5 if scores is None else threshold)
    return {**own, **served_metrics(frame["label"].to_numpy(), rule_flags, scores, threshold)}


def _score_version(settings: Settings, version: str, frame: pd.DataFrame) -> np.ndarray:
    from bp_core.model.registry import load_version
    from bp_core.model.training import model_scores

    estimator = load_version(settings.mlflow_tracking_uri, settings.model_name, version, model_cache_dir(settings))
    return model_scores(estimator, frame)


def _one_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0][:300]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ---------------------------------------------------------------------------- the one write path


def _model_state(client, name: str) -> tuple[dict[str, str], dict[str, str]]:
    """(aliases, tags) of the registered model; empty when it does not exist yet."""
    from bp_core.model.registry import is_absent

    try:
        model = client.get_registered_model(name)
    except Exception as exc:
        if is_absent(exc):
            return {}, {}
        raise
    return {k: str(v) for k, v in (model.aliases or {}).items()}, dict(model.tags or {})


def _apply_pending(client, name: str, pending: dict) -> bool:
    """Finish an interrupted change (under the lock). Returns False when it was abandoned."""
    from bp_core.model.registry import CHAMPION, set_alias, set_version_tags

    aliases, _ = _model_state(client, name)
    target = dict(pending["moves"]).get(CHAMPION, pending["expected_champion"])
    applied = aliases.get(CHAMPION) in (pending["expected_champion"], target)
    if applied:
        for index, (alias, version) in enumerate(pending["moves"]):
            if version is None:
                if alias in aliases:
                    client.delete_registered_model_alias(name, alias)
            else:
                set_alias(client, name, alias, version)
            if index == 0:
                crash_point("promotion.after-first-move")
    else:  # the champion was moved by hand since: the interrupted change no longer applies
        log.warning("abandoning the interrupted %s of version %s: champion is now %s, not %s",
                    pending["op"], pending["version"], aliases.get(CHAMPION), pending["expected_champion"])
    state = {pending["state_tag"]: "done" if applied else "abandoned"}
    if applied:
        state[pending["state_tag"].rsplit(".", 1)[0] + ".applied_at"] = _now()
    set_version_tags(client, name, pending["version"], state)
    client.delete_registered_model_tag(name, PENDING_TAG)
    return applied


def _complete_pending(client, name: str) -> dict | None:
    """Finish a change an interrupted run recorded, if any. Returns it when it was applied."""
    from bp_core.model.registry_lock import RegistryLock

    if PENDING_TAG not in _model_state(client, name)[1]:
        return None
    with RegistryLock(client, name):
        raw = _model_state(client, name)[1].get(PENDING_TAG)
        if raw is None:
            return None  # another process completed it while we waited for the lock
        pending = json.loads(raw)
        log.warning("completing the %s of %s version %s recorded at %s by an interrupted run", pending["op"], name,
                    pending["version"], pending["decided_at"])
        return pending if _apply_pending(client, name, pending) else None


def _commit(client, name: str, *, op: str, version: str, expected_champion: str | None, tags: dict[str, str],
            moves: list[tuple[str, str | None]], state_tag: str, clear: str | None = None) -> None:
    """Record a decision on ``version``, then move aliases: see the module docstring.

    Raises:
        ChampionMoved: 'champion' is no longer ``expected_champion``.
        PromotionInProgress: another promote or rollback held the lock too long.
        MlflowException: the registry failed (before the record: nothing changed).
    """
    from bp_core.model.registry import CHAMPION, get_version_tags, set_version_tags
    from bp_core.model.registry_lock import RegistryLock

    with RegistryLock(client, name) as lock:
        _, model_tags = _model_state(client, name)
        if PENDING_TAG in model_tags:
            _apply_pending(client, name, json.loads(model_tags[PENDING_TAG]))
        current = _model_state(client, name)[0].get(CHAMPION)
        if current != expected_champion:
            raise ChampionMoved(f"'{CHAMPION}' moved from {_v(expected_champion)} to {_v(current)} while this {op} "
                                f"ran; nothing changed: run it again")
        lock.verify()
        prefix = state_tag.rsplit(".", 1)[0] + "."
        stale = [key for key in get_version_tags(client, name, version)
                 if (key.startswith(prefix) and key not in tags) or (clear and key.startswith(clear))]
        for key in stale:
            client.delete_model_version_tag(name, version, key)
        set_version_tags(client, name, version, {**tags, state_tag: "pending" if moves else "done"})
        if not moves:
            return
        pending = {"op": op, "version": version, "expected_champion": expected_champion, "moves": moves,
                   "state_tag": state_tag, "decided_at": _now()}
        client.set_registered_model_tag(name, PENDING_TAG, json.dumps(pending))
        crash_point("promotion.after-record")
        _apply_pending(client, name, pending)


def _v(version: str | None) -> str:
    return f"version {version}" if version else "none"


# ---------------------------------------------------------------------------- the three operations


def promote(settings: Settings, *, margin: float = DEFAULT_MARGIN, holdout_readings: int = 50_000,
            seed: int | None = None) -> PromotionDecision:
    """Judge the challenger (``bp_core.model.gate``); record the decision; move 'champion' if promoted.

    Args:
        settings: tracking URI, model name, threshold, ``gate_*`` settings, data folder.
        margin: minimum PR AUC gain over the champion.
        holdout_readings: size of the simulated hold-out.
        seed: hold-out seed; default derived from the challenger version.
    Returns:
        The decision: ``promoted``, ``rejected``, ``deferred`` or ``unchanged``.
    Raises:
        ModelUnavailable: there is no 'challenger'.
        EvaluationFailed: the challenger could not be scored (nothing changed).
        ChampionUnloadable: the champion could not be loaded (nothing changed).
        ChampionMoved, PromotionInProgress: a concurrent promote or rollback (nothing changed).
        MlflowException: the registry failed.
    """
    from bp_core.model.registry import CHALLENGER, CHAMPION, PREVIOUS_CHAMPION, client_for, get_version_tags

    client = client_for(settings.mlflow_tracking_uri)
    name = settings.model_name
    completed = _complete_pending(client, name)
    aliases, _ = _model_state(client, name)
    challenger, champion = aliases.get(CHALLENGER), aliases.get(CHAMPION)
    if challenger is None:
        raise ModelUnavailable(f"no '{CHALLENGER}' version of model {name!r}: run `bp train` first")
    version_tags = get_version_tags(client, name, challenger)
    if champion == challenger:
        recorded = version_tags.get(RECORD_TAG)
        if completed and completed["version"] == challenger and recorded:
            return PromotionDecision.from_record(json.loads(recorded), completed=True)
        return PromotionDecision("unchanged", f"challenger version {challenger} is already champion", challenger,
                                 champion, champion)

    params = GateParameters.from_settings(settings, margin=margin)
    decision_id, decided_at = uuid.uuid4().hex, _now()
    if "rollback.at" in version_tags and version_tags.get("rollback.state") != "abandoned":
        decision = PromotionDecision(
            "rejected", f"version {challenger} was rolled back at {version_tags['rollback.at']} "
                        f"({version_tags.get('rollback.reason', 'no reason given')}); the gate never promotes it "
                        f"again: an operator can, with `bp promote --version {challenger} --reason TEXT`",
            challenger, champion, champion, parameters=params, decision_id=decision_id, decided_at=decided_at)
    else:
        decision = _judge(settings, client, challenger, champion, params, holdout_readings=holdout_readings,
                          seed=seed, scenario=version_tags.get("dataset.scenario"), decision_id=decision_id,
                          decided_at=decided_at)
    moves = ([(PREVIOUS_CHAMPION, champion)] if champion is not None else []) + [(CHAMPION, challenger)]
    _commit(client, name, op="promote", version=challenger, expected_champion=champion, tags=decision.tags(),
            moves=moves if decision.promoted else [], state_tag=STATE_TAG)
    log.info("promotion of %s v%s: %s (%s)", name, challenger, decision.decision, decision.reason)
    return decision


def _judge(settings: Settings, client, challenger: str, champion: str | None, params: GateParameters, *,
           holdout_readings: int, seed: int | None, scenario: str | None, **ids) -> PromotionDecision:
    """Evaluate on one hold-out, read the live evidence, apply the gate (no registry write)."""
    from bp_core.model.shadow import read_evidence
    from bp_core.model.training import rules_scores

    holdout_seed = holdout_seed_for(challenger) if seed is None else seed
    try:
        frame = _generate_holdout(settings, readings=holdout_readings, seed=holdout_seed, scenario=scenario)
    except Exception as exc:  # e.g. a scenario this simulator does not know, a full disk
        raise EvaluationFailed(f"cannot simulate the hold-out (seed {holdout_seed}, scenario {scenario or 'baseline'}: "
                               f"{_one_line(exc)}); nothing changed") from exc
    rule_flags = rules_scores(frame, settings)
    threshold = params.threshold
    try:
        challenger_metrics = _figures(_score_version(settings, challenger, frame), rule_flags, frame, threshold)
    except Exception as exc:
        raise EvaluationFailed(f"cannot evaluate challenger version {challenger} on the hold-out "
                               f"({_one_line(exc)}); nothing changed") from exc
    champion_metrics = None
    if champion is not None:
        try:
            champion_metrics = _figures(_score_version(settings, champion, frame), rule_flags, frame, threshold)
        except Exception as exc:
            raise ChampionUnloadable(
                f"champion version {champion} cannot be loaded or scored ({_one_line(exc)}), so the gate cannot "
                f"compare with it; nothing changed. Way out: `bp promote --version N --reason TEXT` serves a "
                f"version without the gate, `bp promote --rollback` goes back to previous-champion") from exc
    rules_metrics = _figures(None, rule_flags, frame, threshold)
    evidence = read_evidence(client, settings.model_name, challenger, champion) if champion is not None else None
    decision, reason, checks = judge(challenger_metrics, champion_metrics, rules_metrics, params, _group_sizes(frame),
                                     evidence.live() if evidence is not None else None)
    return PromotionDecision(
        decision, reason, challenger, champion, challenger if decision == "promoted" else champion,
        challenger_metrics=challenger_metrics, champion_metrics=champion_metrics, rules_metrics=rules_metrics,
        holdout_rows=len(frame), holdout_seed=holdout_seed, holdout_scenario=scenario, checks=checks,
        parameters=params, evidence=vars(evidence).copy() if evidence is not None else None, **ids)


def promote_version(settings: Settings, version: str, *, reason: str) -> PromotionDecision:
    """An operator's override: make ``version`` champion without the gate (``bp promote --version``).

    Brings back a rolled-back version (its ``rollback.*`` tags are removed; the decision's
    reason says when it was rolled back). Recorded like any decision.

    Raises:
        UsageError: no such version, or no reason given.
        ModelUnavailable: the version cannot be loaded (nothing changed).
        ChampionMoved, PromotionInProgress: a concurrent promote or rollback (nothing changed).
        MlflowException: the registry failed.
    """
    from bp_core.model.registry import CHAMPION, PREVIOUS_CHAMPION, client_for, get_version_tags, is_absent, load_version

    if not reason or not reason.strip():
        raise UsageError("--version needs --reason TEXT: why this version serves without the gate")
    version = str(version)
    client = client_for(settings.mlflow_tracking_uri)
    name = settings.model_name
    try:
        client.get_model_version(name, version)
    except Exception as exc:
        if is_absent(exc) or getattr(exc, "error_code", None) == "INVALID_PARAMETER_VALUE":
            raise UsageError(f"--version {version}: model {name!r} has no version {version}") from exc
        raise
    _complete_pending(client, name)
    champion = _model_state(client, name)[0].get(CHAMPION)
    if champion == version:
        return PromotionDecision("unchanged", f"version {version} is already champion", version, champion, champion)
    try:
        load_version(settings.mlflow_tracking_uri, name, version, model_cache_dir(settings))
    except Exception as exc:
        raise ModelUnavailable(f"version {version} cannot be loaded ({_one_line(exc)}); nothing changed") from exc
    tags = get_version_tags(client, name, version)
    note = (f" (brought back after its rollback at {tags['rollback.at']}: {tags.get('rollback.reason', '')})"
            if "rollback.at" in tags else "")
    decision = PromotionDecision("promoted", f"operator override: {reason.strip()}{note}", version, champion, version,
                                 override=True, decision_id=uuid.uuid4().hex, decided_at=_now())
    moves = [(PREVIOUS_CHAMPION, champion)] if champion is not None else []
    _commit(client, name, op="override", version=version, expected_champion=champion, tags=decision.tags(),
            moves=moves + [(CHAMPION, version)], state_tag=STATE_TAG, clear="rollback.")
    log.warning("%s version %s made champion by an operator, without the gate: %s", name, version, reason)
    return decision


def rollback(settings: Settings, *, reason: str | None = None) -> PromotionDecision:
    """Point 'champion' back at 'previous-champion', remove that alias, and mark the version
    rolled back so the gate never promotes it again.

    Raises:
        ModelUnavailable: there is no 'previous-champion' to roll back to.
        ChampionMoved, PromotionInProgress: a concurrent promote or rollback (nothing changed).
        MlflowException: the registry failed.
    """
    from bp_core.model.registry import CHAMPION, PREVIOUS_CHAMPION, client_for

    client = client_for(settings.mlflow_tracking_uri)
    name = settings.model_name
    _complete_pending(client, name)
    aliases, _ = _model_state(client, name)
    previous, current = aliases.get(PREVIOUS_CHAMPION), aliases.get(CHAMPION)
    if previous is None:
        raise ModelUnavailable(f"no '{PREVIOUS_CHAMPION}' version of model {name!r}: nothing to roll back to")
    if current is None or current == previous:
        raise ModelUnavailable(f"'{CHAMPION}' is {_v(current)}, '{PREVIOUS_CHAMPION}' version {previous}: nothing to "
                               f"roll back; `bp promote --version N --reason TEXT` sets the champion")
    reason = (reason or "").strip() or "operator rollback (no reason given)"
    at = _now()
    text = f"champion rolled back from version {current} to {previous}: {reason}"
    tags = {"rollback.at": at, "rollback.reason": reason, "rollback.to": previous, "rollback.id": uuid.uuid4().hex}
    _commit(client, name, op="rollback", version=current, expected_champion=current, tags=tags,
            moves=[(CHAMPION, previous), (PREVIOUS_CHAMPION, None)], state_tag="rollback.state")
    log.warning("%s: %s", name, text)
    return PromotionDecision("rolled_back", text, current, current, previous, decided_at=at)
