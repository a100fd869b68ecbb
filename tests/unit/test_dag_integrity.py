"""DAG integrity: every DAG file imports cleanly and follows the house rules.

The DagBag is filled in a subprocess with a throw-away AIRFLOW_HOME: Airflow reads its
configuration when first imported, so doing it in the pytest process would tie every
later test to this one's settings.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
PLUGINS = REPO / "plugins"
DAG_IDS = {"bp_generate_data", "bp_train_model", "bp_promote_model", "bp_stream_simulation", "bp_monitor_drift"}
# Modules a DAG file must not import at parse time (they belong inside tasks).
HEAVY = ("mlflow", "sklearn", "kafka", "pandas", "numpy", "pyarrow", "elasticsearch", "bp_core.model",
         "bp_core.simulation.datasets", "bp_core.simulation.stream", "bp_core.consumer")

_INSPECT = r"""
import json, sys
from pathlib import Path
from airflow.dag_processing.dagbag import BundleDagBag

dags = Path(sys.argv[1])
# BundleDagBag is what the dag-processor and task runner use: it puts the bundle
# folder on sys.path, so DAG files can share dags/_bp_common.py.
bag = BundleDagBag(dag_folder=dags, bundle_path=dags)


def asset_names(condition):
    # The asset names in a schedule's condition (an Asset, or AssetAny/AssetAll of them).
    if condition is None:
        return []
    if hasattr(condition, "objects"):
        return [name for inner in condition.objects for name in asset_names(inner)]
    return [condition.name]


print("@@" + json.dumps({
    "import_errors": {str(k): v for k, v in bag.import_errors.items()},
    "dags": {
        dag_id: {
            "tags": sorted(dag.tags or []),
            "retries": (dag.default_args or {}).get("retries"),
            "retry_delay": (dag.default_args or {}).get("retry_delay").total_seconds()
                if (dag.default_args or {}).get("retry_delay") else None,
            "doc_md": bool((dag.doc_md or "").strip()),
            "catchup": dag.catchup,
            "max_active_runs": dag.max_active_runs,
            "timetable": type(dag.timetable).__name__,
            "params": sorted(dag.params.keys()),
            "outlets": sorted(a.name for t in dag.tasks for a in t.outlets),
            "schedule_assets": sorted(asset_names(getattr(dag.timetable, "asset_condition", None))),
            "fileloc": dag.fileloc,
        }
        for dag_id, dag in bag.dags.items()
    },
}))
"""


def airflow_env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
    })
    return env


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory) -> dict:
    home = tmp_path_factory.mktemp("airflow-home")
    proc = subprocess.run([sys.executable, "-c", _INSPECT, str(DAGS)], env=airflow_env(home),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("@@"))
    return json.loads(line[2:])


def test_no_import_errors(dagbag):
    assert dagbag["import_errors"] == {}


def test_the_five_dags_exist(dagbag):
    assert set(dagbag["dags"]) == DAG_IDS


@pytest.mark.parametrize("dag_id", sorted(DAG_IDS))
def test_dag_policy(dagbag, dag_id):
    dag = dagbag["dags"][dag_id]
    assert "bp-monitor" in dag["tags"]
    assert dag["retries"] is not None and dag["retries"] >= 1
    assert 60 <= dag["retry_delay"] <= 300
    assert dag["doc_md"], f"{dag_id} has no doc_md"
    assert dag["catchup"] is False
    assert dag["max_active_runs"] == 1
    assert Path(dag["fileloc"]).name == f"{dag_id}.py", "one DAG per file, named after it"


def test_schedules_and_assets(dagbag):
    dags = dagbag["dags"]
    assert dags["bp_generate_data"]["timetable"] == "CronTriggerTimetable"
    assert dags["bp_generate_data"]["outlets"] == ["bp_training_data"]
    assert dags["bp_train_model"]["timetable"] == "AssetOrTimeSchedule"
    assert dags["bp_train_model"]["outlets"] == ["bp_challenger_model"]
    assert dags["bp_promote_model"]["timetable"] == "AssetOrTimeSchedule"  # hourly too: deferred decisions
    assert dags["bp_train_model"]["schedule_assets"] == ["bp_drift_detected", "bp_training_data"], \
        "weekly, on new data or on drift"
    assert {"scenario", "patients", "readings"} <= set(dags["bp_train_model"]["params"])
    assert dags["bp_monitor_drift"]["timetable"] == "CronTriggerTimetable"
    assert dags["bp_monitor_drift"]["outlets"] == ["bp_drift_detected"]
    assert {"since", "rearm_hours"} <= set(dags["bp_monitor_drift"]["params"])
    assert dags["bp_stream_simulation"]["timetable"] == "NullTimetable"
    assert {"patients", "readings", "seed", "scenario"} <= set(dags["bp_generate_data"]["params"])
    assert "margin" in dags["bp_promote_model"]["params"]
    assert {"count", "rate", "patients", "seed", "scenario"} <= set(dags["bp_stream_simulation"]["params"])


def _module_level_imports(path: Path) -> set[str]:
    """Modules imported outside any function or class body (i.e. at parse time)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()

    def visit(node, top: bool):
        for child in ast.iter_child_nodes(node):
            inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef))
            if top and isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif top and isinstance(child, ast.ImportFrom) and child.module:
                found.add(child.module)
            visit(child, inner)

    visit(tree, True)
    return found


DAG_FILES = sorted(DAGS.glob("*.py"))


@pytest.mark.parametrize("path", DAG_FILES, ids=[p.name for p in DAG_FILES])
def test_no_heavy_imports_at_parse_time(path):
    imports = _module_level_imports(path)
    heavy = sorted(m for m in imports if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert not heavy, f"{path.name} imports {heavy} at module level; import them inside the task"
    legacy = sorted(m for m in imports if m.startswith(("airflow.decorators", "airflow.models", "airflow.datasets",
                                                        "airflow.operators")))
    assert not legacy, f"{path.name} uses pre-Airflow-3 modules {legacy}; use airflow.sdk"


def test_the_ast_scan_sees_module_level_imports(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import mlflow\nfrom sklearn import linear_model\n"
                      "def f():\n    import kafka\n")
    assert _module_level_imports(sample) == {"mlflow", "sklearn"}


_HELPERS = r"""
import datetime as dt, json, math, sys
from pathlib import Path
from types import SimpleNamespace
sys.path.insert(0, sys.argv[1])
import _bp_common as c

root = Path(sys.argv[2])
for day in ("2026-03-01", "2026-03-03"):
    (root / day).mkdir(parents=True)
    (root / day / "readings.parquet").write_bytes(b"x")
(root / "2026-03-09").mkdir()  # unfinished: no readings.parquet
event = SimpleNamespace(extra={"path": str(root / "2026-03-01")}, asset=SimpleNamespace(name="bp_training_data"))
drift = SimpleNamespace(extra={"model_version": "3"}, asset=SimpleNamespace(name="bp_drift_detected"))
utc = dt.timezone.utc
out = {
    "newest": str(c.choose_training_data(None, {}, root)),
    "explicit": str(c.choose_training_data("/data/x", {}, root)),
    "event": str(c.choose_training_data(None, {"bp_training_data": [event]}, root)),
    "interval": c.run_date({"data_interval_start": dt.datetime(2026, 3, 2, tzinfo=utc),
                            "logical_date": dt.datetime(2026, 3, 5, tzinfo=utc)}),
    "manual": c.run_date({"data_interval_start": None, "logical_date": None,
                          "dag_run": SimpleNamespace(run_after=dt.datetime(2026, 3, 7, 12, tzinfo=utc))}),
    "drift_events": [e.extra for e in c.drift_events({"a": [event], "b": [drift]})],
    "no_drift_events": c.drift_events({"a": [event]}),
    "plain": c.plain({"p": Path("/a"), "nan": math.nan, "n": [1, 2.5], "t": (True,)}),
}
try:
    c.choose_training_data(None, {}, root / "nothing")
    out["missing"] = "no error"
except FileNotFoundError as exc:
    out["missing"] = str(exc)
print("@@" + json.dumps(out))
"""


def test_shared_helpers(tmp_path):
    """Data-set choice, run date and XCom-safe values (dags/_bp_common.py)."""
    proc = subprocess.run([sys.executable, "-c", _HELPERS, str(DAGS), str(tmp_path / "training")],
                          env=airflow_env(tmp_path / "home"), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("@@"))[2:])
    assert out["newest"].endswith("2026-03-03"), "newest complete partition"
    assert out["explicit"] == "/data/x"
    assert out["event"].endswith("2026-03-01"), "the triggering event's partition wins over the newest"
    assert out["interval"] == "2026-03-02", "data interval start, not the logical date"
    assert out["manual"] == "2026-03-07", "no data interval: run_after"
    assert out["plain"] == {"p": "/a", "nan": None, "n": [1, 2.5], "t": [True]}
    assert "run bp_generate_data first" in out["missing"]
    assert out["drift_events"] == [{"model_version": "3"}] and out["no_drift_events"] == []


_WORLD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import _bp_common as c

out = {"param": c.world_scenario({"scenario": "older-cohort"}), "variable": c.world_scenario({"scenario": None}),
       "no_param": c.world_scenario({})}
try:
    c.world_scenario({"scenario": "moon"})
except ValueError as exc:
    out["unknown"] = str(exc)
print("@@" + json.dumps(out))
"""


@pytest.mark.parametrize("variable, expected", [(None, "baseline"), ("cuff-offset", "cuff-offset")])
def test_world_scenario(tmp_path, variable, expected):
    """The param wins; else the Variable bp_scenario (here from the environment); else baseline."""
    env = airflow_env(tmp_path / "home")
    env.pop("AIRFLOW_VAR_BP_SCENARIO", None)
    if variable:
        env["AIRFLOW_VAR_BP_SCENARIO"] = variable
    proc = subprocess.run([sys.executable, "-c", _WORLD, str(DAGS)], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("@@"))[2:])
    assert out["param"] == "older-cohort"
    assert out["variable"] == out["no_param"] == expected
    assert out["unknown"] == "unknown scenario 'moon': choose from baseline, cuff-offset, older-cohort"


def test_plugin_adds_mlflow_and_kibana_links(tmp_path):
    """`airflow plugins` loads plugins/bp_links.py: two Browse-menu links, no iframe."""
    env = {**airflow_env(tmp_path / "home"), "BP_MLFLOW_UI_URL": "http://mlflow.example:5000"}
    env.pop("BP_KIBANA_URL", None)
    proc = subprocess.run([str(Path(sys.executable).parent / "airflow"), "plugins", "-o", "json"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # stdout also carries Airflow's log lines: the JSON document is the line that starts with [{
    plugins = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("[{")))
    plugin = next(p for p in plugins if p["name"] == "bp_links")
    views = {view["name"]: view for view in plugin["external_views"]}
    assert views["MLflow"]["href"] == "http://mlflow.example:5000"
    assert views["Kibana"]["href"] == "http://localhost:5601"
    assert all(v["destination"] == "nav" and v["category"] == "browse" and not v.get("url_route")
               for v in views.values())
