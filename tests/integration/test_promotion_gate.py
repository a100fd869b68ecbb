"""The promotion gate against a real MLflow registry: a SQLite store AND a real `mlflow server`.

Every test runs on both (the ``backend`` fixture: one store per module and backend, one
registered model per test). Models are fitted once per module on small simulated data
sets; ``log_version`` logs a fitted pipeline as a new version with its own run and
artifacts, as training does; the first test trains through ``train_and_register`` itself.

Covered: the rules as champion of last resort (a shuffled-label first model is kept
out); a rollback sticks through later `bp promote` runs until `--version N --reason`;
the decision is recorded before the aliases move (a SIGKILL between the two, and the
rerun that completes it); the registry lock (mutual exclusion, stale locks) and a
promote and a rollback at once; deferred without shadow evidence, promoted with the
evidence two consumer members published; failures leave the registry as it was.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlparse

import numpy as np
import pytest

from bp_core import crashpoints
from bp_core.errors import ChampionMoved, PromotionInProgress
from bp_core.model import promotion
from bp_core.model.registry import CHALLENGER, CHAMPION, PREVIOUS_CHAMPION, client_for, set_alias
from bp_core.model.registry_lock import LOCK_SUFFIX, RegistryLock
from bp_core.model.shadow import ShadowRecorder, read_evidence
from bp_core.settings import Settings
from bp_core.simulation.datasets import generate_dataset, load_dataset
from tests.integration.helpers import REPO, TcpProxy, wait_for

BIN = Path(sys.executable).parent
BP, MLFLOW = str(BIN / "bp"), str(BIN / "mlflow")
HOLDOUT = ["--holdout-readings", "5000", "--seed", "7000001"]  # one hold-out for every test: outcomes fixed
HOLDOUT_KW = {"holdout_readings": 5000, "seed": 7000001}


# ---------------------------------------------------------------------------- fixtures


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module", params=["sqlite", "server"])
def backend(request, tmp_path_factory):
    """One MLflow store for the module: a SQLite file, or a real tracking server (SQLite
    backend, local artifact store, one worker) stopped afterwards."""
    root = tmp_path_factory.mktemp(f"gate-{request.param}")
    if request.param == "sqlite":
        yield SimpleNamespace(kind="sqlite", uri=f"sqlite:///{root / 'mlflow.db'}", root=root, artifacts=None)
        return
    port = _free_port()
    log_path = root / "mlflow-server.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([MLFLOW, "server", "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
                                 "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1",
                                 "--port", str(port), "--workers", "1"],
                                stdout=log, stderr=log, start_new_session=True,
                                env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})

    def healthy() -> bool:
        import urllib.request

        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200
        except OSError:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            return False
    try:
        wait_for(healthy, timeout=90, interval=0.5, what="mlflow server")
        yield SimpleNamespace(kind="server", uri=f"http://127.0.0.1:{port}", root=root, artifacts=root / "artifacts",
                              port=port)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A small labelled data set, its shuffled-label twin, and pipelines fitted on each."""
    from bp_core.model.training import fit_and_evaluate

    root = tmp_path_factory.mktemp("gate-data")
    good_path = generate_dataset(root / "good", patients=50, readings=5000, seed=1)
    frame = load_dataset(good_path)
    shuffled = frame.copy()
    shuffled["label"] = np.random.default_rng(0).permutation(frame["label"].to_numpy())
    (root / "shuffled").mkdir()
    shuffled.to_parquet(root / "shuffled" / "readings.parquet")
    live = load_dataset(generate_dataset(root / "live", patients=40, readings=3000, seed=99))
    return SimpleNamespace(good_path=good_path, shuffled_path=root / "shuffled", live=live,
                           good=fit_and_evaluate(frame, Settings(), seed=1).pipeline,
                           shuffled=fit_and_evaluate(shuffled, Settings(), seed=1).pipeline)


@pytest.fixture
def settings(backend, tmp_path_factory) -> Settings:
    """This test's own registered model in the module's store; live evidence not required."""
    return Settings().with_(mlflow_tracking_uri=backend.uri, data_dir=tmp_path_factory.getbasetemp() / "gate-work",
                            model_name=f"bp-gate-{uuid.uuid4().hex[:8]}", gate_min_shadow_readings=0)


def log_version(settings: Settings, pipeline, *, challenger: bool = True) -> str:
    """Log a fitted pipeline as a new version (own run, own artifacts); 'challenger' by default."""
    import mlflow
    import mlflow.sklearn

    from bp_core.model.training import ensure_experiment

    client = client_for(settings.mlflow_tracking_uri)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    with mlflow.start_run(experiment_id=ensure_experiment(client, settings)):
        info = mlflow.sklearn.log_model(pipeline, name="model", registered_model_name=settings.model_name,
                                        serialization_format="skops", pip_requirements=["scikit-learn"])
    version = str(info.registered_model_version)
    if challenger:
        set_alias(client, settings.model_name, CHALLENGER, version)
    return version


def aliases(settings) -> dict[str, str | None]:
    model = client_for(settings.mlflow_tracking_uri).get_registered_model(settings.model_name)
    found = {alias: str(version) for alias, version in (model.aliases or {}).items()}
    return {alias: found.get(alias) for alias in (CHALLENGER, CHAMPION, PREVIOUS_CHAMPION)}


def version_tags(settings, version: str) -> dict[str, str]:
    return dict(client_for(settings.mlflow_tracking_uri).get_model_version(settings.model_name, version).tags)


def registry_state(settings) -> tuple:
    """Aliases, model tags and every version's tags: what "nothing changed" compares."""
    client = client_for(settings.mlflow_tracking_uri)
    model = client.get_registered_model(settings.model_name)
    versions = client.search_model_versions(f"name='{settings.model_name}'")
    return (dict(model.aliases), dict(model.tags), {v.version: dict(v.tags) for v in versions})


def bp_variables(settings) -> dict[str, str]:
    return {"MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri, "BP_DATA_DIR": str(settings.data_dir),
            "BP_MODEL_NAME": settings.model_name, "BP_GATE_MIN_SHADOW_READINGS": str(settings.gate_min_shadow_readings)}


def bp_env(settings, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != crashpoints.ENV}
    env.update(bp_variables(settings))
    env.update({k: str(v) for k, v in extra.items()})
    return env


def bp(settings, *args: str, **env) -> subprocess.CompletedProcess:
    """`bp promote ARGS` in a process of its own (where a crash, a lock or the real stderr matters)."""
    return subprocess.run([BP, "promote", *args], env=bp_env(settings, **env), cwd=REPO, capture_output=True,
                          text=True, timeout=180)


@pytest.fixture
def cli(monkeypatch, capsys):
    """`bp promote ARGS` through ``bp_core.cli.main`` in this process: (exit status, stdout, stderr)."""
    from bp_core.cli import main

    def run(settings, *args: str) -> tuple[int, str, str]:
        for key, value in bp_variables(settings).items():
            monkeypatch.setenv(key, value)
        capsys.readouterr()
        try:
            code = main(["promote", *args])
        except SystemExit as exc:  # argparse
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err
    return run


def champion_then(settings, data, *, challengers: int = 1) -> list[str]:
    """v1 (good) made champion (by an operator: this setup is not what is tested), then
    ``challengers`` more versions of the same pipeline; the last is 'challenger'."""
    first = log_version(settings, data.good, challenger=False)
    assert promotion.promote_version(settings, first, reason="test set-up").promoted
    return [first] + [log_version(settings, data.good) for _ in range(challengers)]


# ---------------------------------------------------------------------------- 1. the rules


def test_a_shuffled_label_first_model_is_kept_out_and_a_real_one_beats_the_rules(settings, data):
    from bp_core.model.training import train_and_register

    shuffled = train_and_register(settings, data.shuffled_path, seed=1)
    decision = promotion.promote(settings, **HOLDOUT_KW)
    assert decision.decision == "rejected", decision.summary()
    assert "does not beat the rules alone" in decision.reason and "champion of last resort" in decision.reason
    assert decision.challenger_metrics["pr_auc"] < decision.rules_metrics["pr_auc"]
    assert aliases(settings)[CHAMPION] is None
    tags = version_tags(settings, shuffled.model_version)
    assert tags["promotion.decision"] == "rejected" and tags["promotion.state"] == "done"
    assert tags["promotion.checks"].startswith("FAILS: pr_auc")
    record = json.loads(tags["promotion.record"])
    assert record["decision"] == "rejected" and record["holdout_rows"] == 5000
    assert record["rules_metrics"]["pr_auc"] == pytest.approx(decision.rules_metrics["pr_auc"])
    assert record["challenger_metrics"]["served_alert_rate"] == pytest.approx(
        decision.challenger_metrics["served_alert_rate"])

    good = train_and_register(settings, data.good_path, seed=1)
    decision = promotion.promote(settings, **HOLDOUT_KW)
    assert decision.promoted, decision.summary()
    assert decision.reason.startswith("no champion; the challenger beats the rules alone")
    served = {c.name: c for c in decision.checks}
    assert served["served_f1"].challenger >= served["served_f1"].reference
    assert aliases(settings) == {CHALLENGER: good.model_version, CHAMPION: good.model_version, PREVIOUS_CHAMPION: None}
    tags = version_tags(settings, good.model_version)
    assert tags["promotion.state"] == "done" and tags["promotion.applied_at"]
    assert promotion.promote(settings, **HOLDOUT_KW).decision == "unchanged"


# ---------------------------------------------------------------------------- 2. rollback sticks


def test_a_rollback_sticks_until_an_operator_brings_the_version_back(settings, data, cli):
    first, second = champion_then(settings, data)
    assert promotion.promote(settings, margin=0.0, **HOLDOUT_KW).promoted  # an identical copy passes at margin 0
    assert aliases(settings) == {CHALLENGER: second, CHAMPION: second, PREVIOUS_CHAMPION: first}

    code, out, err = cli(settings, "--rollback", "--reason", "alert storm on ward 3")
    assert code == 0, err
    assert out.startswith("decision: rolled_back (champion: v1, was v2)")
    tags = version_tags(settings, second)
    assert tags["rollback.reason"] == "alert storm on ward 3" and tags["rollback.state"] == "done"
    assert aliases(settings) == {CHALLENGER: second, CHAMPION: first, PREVIOUS_CHAMPION: None}

    for _ in range(2):  # two more runs of the gate, as a retry or the next schedule would
        code, out, err = cli(settings, "--margin", "0", *HOLDOUT)
        assert code == 0, err
        assert out.startswith("decision: rejected") and f"rolled back at {tags['rollback.at']}" in out
        assert "alert storm on ward 3" in out
        assert aliases(settings)[CHAMPION] == first
    assert version_tags(settings, second)["promotion.decision"] == "rejected"

    code, out, err = cli(settings, "--version", second, "--reason", "storm was a cuff recall, not the model")
    assert code == 0, err
    assert out.startswith("decision: promoted") and "operator override" in out
    assert aliases(settings) == {CHALLENGER: second, CHAMPION: second, PREVIOUS_CHAMPION: first}
    tags = version_tags(settings, second)
    assert tags["promotion.override"] == "true" and "brought back after its rollback" in tags["promotion.reason"]
    assert not any(key.startswith("rollback.") for key in tags)


# ---------------------------------------------------------------------------- 6. record, then move


@pytest.mark.parametrize("point, moved", [("promotion.after-record", False), ("promotion.after-first-move", True)])
def test_a_crash_between_the_record_and_the_move_is_completed_by_a_rerun(settings, data, cli, point, moved):
    first, second = champion_then(settings, data)
    crashed = bp(settings, "--margin", "0", *HOLDOUT, **{crashpoints.ENV: point})
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr

    state = aliases(settings)
    assert state[CHAMPION] == first  # the champion alias is the last to move
    assert state[PREVIOUS_CHAMPION] == (first if moved else None)
    tags = version_tags(settings, second)
    assert tags["promotion.decision"] == "promoted" and tags["promotion.state"] == "pending"
    pending = json.loads(client_for(settings.mlflow_tracking_uri).get_registered_model(settings.model_name)
                         .tags[promotion.PENDING_TAG])
    assert pending["version"] == second and pending["expected_champion"] == first
    lock = settings.model_name + LOCK_SUFFIX  # the dead process's lock is still there
    assert client_for(settings.mlflow_tracking_uri).get_registered_model(lock)

    code, out, err = cli(settings, "--margin", "0", *HOLDOUT)
    assert code == 0, err
    assert out.startswith("decision: promoted") and "completed the decision recorded at" in out
    assert aliases(settings) == {CHALLENGER: second, CHAMPION: second, PREVIOUS_CHAMPION: first}
    assert version_tags(settings, second)["promotion.state"] == "done"
    assert promotion.PENDING_TAG not in client_for(settings.mlflow_tracking_uri).get_registered_model(
        settings.model_name).tags
    assert cli(settings, "--margin", "0", *HOLDOUT)[1].startswith("decision: unchanged")


# ---------------------------------------------------------------------------- 6. two at once


def test_the_lock_excludes_concurrent_writers(settings):
    client = client_for(settings.mlflow_tracking_uri)
    client.create_registered_model(settings.model_name, tags={"counter": "0"})
    errors: list[BaseException] = []

    def bump() -> None:  # read-modify-write: lost updates unless the lock excludes
        try:
            own = client_for(settings.mlflow_tracking_uri)
            for _ in range(3):
                with RegistryLock(own, settings.model_name, poll_seconds=0.02):
                    value = int(own.get_registered_model(settings.model_name).tags["counter"])
                    own.set_registered_model_tag(settings.model_name, "counter", str(value + 1))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    assert client.get_registered_model(settings.model_name).tags["counter"] == "12"


def test_a_stale_lock_is_broken_and_a_live_one_is_waited_for(settings):
    client = client_for(settings.mlflow_tracking_uri)
    lock_name = settings.model_name + LOCK_SUFFIX
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)
    client.create_registered_model(lock_name, tags={"owner": f"{socket.gethostname()}:{dead_pid}:deadbeef",
                                                    "expires_at": "9999999999", "acquired_at": "earlier"})
    with RegistryLock(client, settings.model_name, wait_seconds=5) as lock:  # its owner died: broken at once
        assert client.get_registered_model(lock_name).tags["owner"] == lock.owner
        with pytest.raises(PromotionInProgress, match="another promote or rollback holds the registry lock"):
            RegistryLock(client_for(settings.mlflow_tracking_uri), settings.model_name, wait_seconds=0.3).acquire()
    client.create_registered_model(lock_name, tags={"owner": "elsewhere:1:cafe", "expires_at": "1",
                                                    "acquired_at": "long ago"})
    with RegistryLock(client, settings.model_name, wait_seconds=5) as lock:  # expired
        assert client.get_registered_model(lock_name).tags["owner"] == lock.owner
    with pytest.raises(Exception, match="RESOURCE_DOES_NOT_EXIST|not found|does not exist"):
        client.get_registered_model(lock_name)  # released


def test_a_promote_and_a_rollback_at_once_cannot_both_win(settings, data, tmp_path):
    first, second, third = champion_then(settings, data, challengers=2)
    set_alias(client_for(settings.mlflow_tracking_uri), settings.model_name, CHALLENGER, second)
    assert promotion.promote(settings, margin=0.0, **HOLDOUT_KW).promoted
    set_alias(client_for(settings.mlflow_tracking_uri), settings.model_name, CHALLENGER, third)
    assert aliases(settings)[CHAMPION] == second

    held = RegistryLock(client_for(settings.mlflow_tracking_uri), settings.model_name)
    held.acquire()  # both commands read 'champion', then wait for the lock
    logs = {name: tmp_path / f"{name}.log" for name in ("override", "rollback")}
    procs = {}
    try:
        for name, args in (("override", ["--version", third, "--reason", "hotfix"]),
                           ("rollback", ["--rollback", "--reason", "bad night"])):
            with open(logs[name], "wb") as log:
                procs[name] = subprocess.Popen([BP, "promote", *args], env=bp_env(settings), cwd=REPO, stdout=log,
                                               stderr=log)
        wait_for(lambda: all("waiting for the registry lock" in logs[n].read_text() for n in logs), timeout=90,
                 what="both commands waiting for the lock")
    finally:
        held.release()
    codes = {name: proc.wait(timeout=120) for name, proc in procs.items()}
    winners = [name for name, code in codes.items() if code == 0]
    assert len(winners) == 1, {name: logs[name].read_text()[-2000:] for name in logs}
    loser = "rollback" if winners == ["override"] else "override"
    assert codes[loser] == 1
    assert "'champion' moved from version 2 to" in logs[loser].read_text()
    expected = ({CHAMPION: third, PREVIOUS_CHAMPION: second} if winners == ["override"]
                else {CHAMPION: first, PREVIOUS_CHAMPION: None})
    state = aliases(settings)
    assert {k: state[k] for k in expected} == expected


def test_a_decision_against_a_champion_that_moved_records_nothing(settings, data):
    first, second = champion_then(settings, data)
    client = client_for(settings.mlflow_tracking_uri)
    before = registry_state(settings)
    with pytest.raises(ChampionMoved, match="moved from version 2 to version 1"):
        promotion._commit(client, settings.model_name, op="promote", version=second, expected_champion=second,
                          tags={"promotion.decision": "promoted"}, moves=[(CHAMPION, second)],
                          state_tag="promotion.state")
    assert registry_state(settings) == before


# ---------------------------------------------------------------------------- 4-5. live evidence


def test_deferred_without_shadow_evidence_promoted_with_it(settings, data, cli):
    from bp_core.model.serving import ModelProvider
    from bp_core.model.training import frame_features, rules_scores

    settings = settings.with_(gate_min_shadow_readings=2000)
    first, second = champion_then(settings, data)
    decision = promotion.promote(settings, margin=0.0, **HOLDOUT_KW)
    assert decision.decision == "deferred", decision.summary()
    assert "0 of 2,000 readings shadow-scored so far" in decision.reason
    assert version_tags(settings, second)["promotion.decision"] == "deferred"
    assert aliases(settings)[CHAMPION] == first

    # Two consumer processes, each with its share of the traffic, publish as the consumer will.
    champion = ModelProvider(settings)
    challenger = ModelProvider(settings, alias=CHALLENGER)
    champion.start()
    challenger.start()
    assert (champion.current.version, challenger.current.version) == (first, second)
    features, flags = frame_features(data.live), rules_scores(data.live, settings).astype(bool)
    halves = np.array_split(np.arange(len(data.live)), 2)
    for member, rows in zip(("g.host-a.1.t0", "g.host-b.2.t0"), halves):
        recorder = ShadowRecorder(settings, member=member, publish_seconds=600)
        recorder.start()
        for batch in np.array_split(rows, 3):
            recorder.record(challenger.current.version, champion.current.version, flags[batch],
                            champion.current.predict_proba(features[batch]),
                            challenger.current.predict_proba(features[batch]))
        recorder.close()  # publishes what it has
        assert recorder.publish_errors == 0
    evidence = read_evidence(client_for(settings.mlflow_tracking_uri), settings.model_name, second, first)
    assert (evidence.readings, evidence.members) == (len(data.live), 2)
    assert evidence.champion_only == evidence.challenger_only == 0  # the same model twice
    code, out, _ = cli(settings, "--evidence")
    assert code == 0 and f"{len(data.live):,} live readings from 2 consumer process(es)" in out

    decision = promotion.promote(settings, margin=0.0, **HOLDOUT_KW)
    assert decision.promoted, decision.summary()
    assert "on live traffic live_alert_rate" in decision.reason
    tags = version_tags(settings, second)
    record = json.loads(tags["promotion.record"])
    assert (record["evidence"]["readings"], record["evidence"]["members"]) == (len(data.live), 2)
    assert "ok: shadow_readings 3000.0000 vs 2000.0000" in tags["promotion.checks"]
    assert aliases(settings)[CHAMPION] == second
    assert "nothing is shadow-scored" in cli(settings, "--evidence")[1]  # the challenger serves now


def test_the_hold_out_is_simulated_in_the_world_the_challenger_was_trained_for(settings, data):
    import inspect

    from bp_core.errors import EvaluationFailed

    first, second = champion_then(settings, data)
    client_for(settings.mlflow_tracking_uri).set_model_version_tag(settings.model_name, second, "dataset.scenario",
                                                                   "cuff-offset")
    if "scenario" in inspect.signature(generate_dataset).parameters:
        decision = promotion.promote(settings, margin=0.0, **HOLDOUT_KW)
        assert decision.holdout_scenario == "cuff-offset"
        assert json.loads(version_tags(settings, second)["promotion.record"])["holdout_scenario"] == "cuff-offset"
    else:  # a simulator without worlds yet: a clear failure, nothing changed
        before = registry_state(settings)
        with pytest.raises(EvaluationFailed, match="cannot simulate the hold-out .*scenario cuff-offset"):
            promotion.promote(settings, margin=0.0, **HOLDOUT_KW)
        assert registry_state(settings) == before


# ---------------------------------------------------------------------------- 7. failures


def test_a_challenger_that_cannot_be_scored_leaves_the_registry_as_it_was(settings, data, cli):
    from sklearn.linear_model import LogisticRegression

    champion_then(settings, data, challengers=0)
    wrong_features = LogisticRegression().fit(np.random.default_rng(0).normal(size=(40, 3)), [0, 1] * 20)
    bad = log_version(settings, wrong_features)
    before = registry_state(settings)
    code, _, err = cli(settings, *HOLDOUT)
    assert code == 1 and err.startswith(f"bp promote: error: cannot evaluate challenger version {bad} on the hold-out")
    assert registry_state(settings) == before


def test_an_unloadable_champion_is_a_clear_error_and_an_operator_can_get_past_it(settings, data, backend, cli):
    import shutil

    first, second = champion_then(settings, data)
    client = client_for(settings.mlflow_tracking_uri)
    location = client.get_model_version_download_uri(settings.model_name, first)
    parsed = urlparse(location)
    path = Path(parsed.path) if parsed.scheme == "file" else backend.artifacts / parsed.path.lstrip("/")
    assert (path / "MLmodel").is_file(), path
    shutil.rmtree(path)  # the champion's artifacts are gone (and so is its local copy)
    shutil.rmtree(promotion.model_cache_dir(settings) / settings.model_name / first)
    before = registry_state(settings)

    code, _, err = cli(settings, *HOLDOUT)
    assert code == 1 and len(err.splitlines()) == 1
    assert f"champion version {first} cannot be loaded" in err and "bp promote --version N --reason TEXT" in err
    assert registry_state(settings) == before

    code, _, err = cli(settings, "--version", second, "--reason", "champion artifacts lost")
    assert code == 0, err
    assert aliases(settings)[CHAMPION] == second


def test_an_unreachable_registry_is_one_line_and_exit_1(settings, data, backend, cli):
    champion_then(settings, data)
    before = registry_state(settings)
    proxy = TcpProxy("127.0.0.1", backend.port) if backend.kind == "server" else None
    try:
        if proxy is not None:  # the server goes away: connections refused
            proxy.cut()
            through = f"http://127.0.0.1:{proxy.port}"
            why = "the tracking server does not answer (connection refused or timed out)"
        else:  # a store that cannot be opened
            through = "sqlite:////proc/no-such-store/mlflow.db"
            why = "[Errno 2] No such file or directory: '/proc/no-such-store'"
        line = f"bp promote: error: MLflow ({through}): {why}; nothing changed"
        failed = bp(settings.with_(mlflow_tracking_uri=through), *HOLDOUT)  # its own process: the real stderr
        assert (failed.returncode, failed.stderr.strip().splitlines()) == (1, [line]), failed.stderr
        for args in (["--rollback"], ["--version", "1", "--reason", "x"], ["--evidence"]):
            assert cli(settings.with_(mlflow_tracking_uri=through), *args)[0::2] == (1, line + "\n")
    finally:
        if proxy is not None:
            proxy.close()
    assert registry_state(settings) == before


def test_a_version_that_does_not_exist_is_a_usage_error(settings, data, cli):
    champion_then(settings, data, challengers=0)
    before = registry_state(settings)
    code, _, err = cli(settings, "--version", "99", "--reason", "x")
    assert (code, err) == (2, f"bp promote: error: --version 99: model '{settings.model_name}' has no version 99\n")
    for args in (["--version", "1"], ["--reason", "x"], ["--version", "two"], ["--rollback", "--version", "1"]):
        code, _, err = cli(settings, *args)
        assert code == 2 and len(err.strip().splitlines()) == 1, (args, err)
    assert registry_state(settings) == before
