"""Fixtures for the browser tests: a real Airflow api-server and MLflow server with data in
them, and headless Chromium driven over the W3C WebDriver protocol.

* ``chromium`` (session): the Chromium and ChromeDriver binaries; SKIPS when either is
  missing (``apt-get install chromium chromium-driver``).
* ``ui_stack`` (module): a temporary AIRFLOW_HOME (SQLite, migrated), a temporary MLflow
  SQLite store and data folder; the DAG chain generate -> train -> promote run with
  ``airflow dags test`` (the recipe and ``dags_test`` helper of
  ``tests/integration/test_airflow_dags.py``), so DAG runs and a ``champion`` exist; then
  ``airflow api-server`` (simple auth manager, everyone admin: no login form) and
  ``mlflow server`` on free loopback ports, each in its own process group, killed as a
  group afterwards. Server logs go to ``test-artifacts/browser/logs/``.
* ``browser`` (module): one ChromeDriver + headless Chromium session (fresh profile,
  no background networking), driven with plain HTTP calls (stdlib ``urllib``): no
  Python dependency.

Screenshots and the rendered DOM of every checked page go to ``test-artifacts/browser/``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.test_airflow_dags import AIRFLOW, BIN, REPO, RUN_TIMEOUT, airflow_test_env, dags_test

MODEL = "bp-anomaly-classifier"
DAG_IDS = ("bp_generate_data", "bp_train_model", "bp_promote_model", "bp_stream_simulation", "bp_monitor_drift")
ARTIFACTS = REPO / "test-artifacts" / "browser"
LOGS = ARTIFACTS / "logs"
SERVER_START_TIMEOUT = 120  # seconds; the api-server takes ~15-25 s here
INSTALL_HINT = "apt-get install chromium chromium-driver"
# Without the background-networking flags Chromium tries to reach Google hosts, which
# this closed network refuses (see /work/.library/env/machines/polyglot.md).
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1400,900",
]

DURATIONS: dict[str, float] = {}


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def kill_group(proc: subprocess.Popen, grace: float = 15) -> None:
    """SIGTERM the process group started with ``start_new_session``; SIGKILL stragglers."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    try:  # children (uvicorn / gunicorn workers, Chromium renderers) may outlive the leader
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def start_server(name: str, args: list[str], env: dict, cwd: Path) -> tuple[subprocess.Popen, Path]:
    LOGS.mkdir(parents=True, exist_ok=True)
    log_path = LOGS / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    return proc, log_path


def wait_http(name: str, url: str, proc: subprocess.Popen, log_path: Path,
              timeout: float = SERVER_START_TIMEOUT) -> None:
    """Poll ``url`` until it answers 200; fail early if the server died, or after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{name} exited with {proc.returncode} before answering {url}; log: {log_path}\n"
                        f"{_tail(log_path)}", pytrace=False)
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except OSError as exc:
            last = repr(exc)
        time.sleep(0.5)
    pytest.fail(f"{name} did not answer {url} within {timeout:.0f} s (last: {last}); log: {log_path}\n"
                f"{_tail(log_path)}", pytrace=False)


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def serialized_dag_ids(airflow_db: Path) -> set[str]:
    with sqlite3.connect(airflow_db) as conn:
        return {row[0] for row in conn.execute("SELECT dag_id FROM serialized_dag")}


# --------------------------------------------------------------------------- Chromium


@dataclass(frozen=True)
class Chromium:
    binary: str
    driver: str


@pytest.fixture(scope="session")
def chromium() -> Chromium:
    binary = os.environ.get("BP_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = os.environ.get("BP_CHROMEDRIVER") or shutil.which("chromedriver")
    missing = [name for name, path in (("chromium", binary), ("chromedriver", driver)) if not path]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed: `{INSTALL_HINT}` to run the browser tests")
    return Chromium(binary, driver)


class WebDriverError(AssertionError):
    pass


class Browser:
    """The few W3C WebDriver commands the tests need, over HTTP to ChromeDriver."""

    def __init__(self, driver_url: str, session_id: str):
        self.base = f"{driver_url}/session/{session_id}"

    @staticmethod
    def call(method: str, url: str, body: dict | None = None, timeout: float = 90):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read())["value"]
        except urllib.error.HTTPError as exc:
            raise WebDriverError(f"{method} {url}: HTTP {exc.code} {exc.read()[:1000]!r}") from None

    def _cmd(self, method: str, path: str, body: dict | None = None):
        return self.call(method, self.base + path, body)

    def get(self, url: str) -> None:
        self._cmd("POST", "/url", {"url": url})

    @property
    def current_url(self) -> str:
        return self._cmd("GET", "/url")

    @property
    def title(self) -> str:
        return self._cmd("GET", "/title")

    def js(self, script: str, *args):
        return self._cmd("POST", "/execute/sync", {"script": script, "args": list(args)})

    def find_all(self, css: str) -> list[str]:
        """Element references matching ``css`` (possibly none)."""
        refs = self._cmd("POST", "/elements", {"using": "css selector", "value": css})
        return [next(iter(ref.values())) for ref in refs]

    def text(self, element: str) -> str:
        return self._cmd("GET", f"/element/{element}/text")

    def attribute(self, element: str, name: str) -> str | None:
        return self._cmd("GET", f"/element/{element}/attribute/{name}")

    def click(self, element: str, attempts: int = 3) -> None:
        """Click; retried when an overlay (a tooltip, a toast) intercepts it for a moment."""
        for attempt in range(attempts):
            try:
                self._cmd("POST", f"/element/{element}/click", {})
                return
            except WebDriverError as exc:
                if attempt == attempts - 1 or "intercepted" not in str(exc):
                    raise
                time.sleep(0.5)

    def wait_for(self, css: str, count: int = 1, timeout: float = 45, what: str = "") -> list[str]:
        """Poll until at least ``count`` elements match ``css``; fail with a screenshot otherwise."""
        deadline = time.monotonic() + timeout
        found: list[str] = []
        while time.monotonic() < deadline:
            found = self.find_all(css)
            if len(found) >= count:
                return found
            time.sleep(0.3)
        shot = self.save("timeout")
        raise AssertionError(f"{what or css}: {len(found)} of {count} elements after {timeout:.0f} s at "
                             f"{self.current_url} (title {self.title!r}); see {shot} and its .html")

    def wait_js(self, script: str, done, timeout: float = 45, what: str = ""):
        """Poll ``script``'s result until ``done(result)``: one atomic read of the DOM per try,
        so a re-render between two WebDriver calls cannot leave a stale element."""
        deadline = time.monotonic() + timeout
        result = None
        while time.monotonic() < deadline:
            result = self.js(script)
            if done(result):
                return result
            time.sleep(0.3)
        shot = self.save("timeout")
        raise AssertionError(f"{what or script}: last result {result!r} after {timeout:.0f} s at "
                             f"{self.current_url}; see {shot} and its .html")

    def save(self, name: str) -> Path:
        """Screenshot (PNG) and rendered DOM (HTML) under test-artifacts/browser/."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        png = ARTIFACTS / f"{name}.png"
        png.write_bytes(base64.b64decode(self._cmd("GET", "/screenshot")))
        png.with_suffix(".html").write_text(self.js("return document.documentElement.outerHTML"))
        return png


@pytest.fixture(scope="module")
def browser(chromium: Chromium, ui_stack) -> Browser:
    profile = Path(tempfile.mkdtemp(prefix="bp-chromium-"))
    port = free_port()
    proc, log_path = start_server("chromedriver", [chromium.driver, f"--port={port}"], dict(os.environ), profile)
    driver_url = f"http://127.0.0.1:{port}"
    wait_http("chromedriver", f"{driver_url}/status", proc, log_path, timeout=30)
    caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
        "binary": chromium.binary, "args": [*CHROMIUM_FLAGS, f"--user-data-dir={profile / 'profile'}"]}}}}
    try:
        session = Browser.call("POST", f"{driver_url}/session", caps)
        browser = Browser(driver_url, session["sessionId"])
        yield browser
        try:
            Browser.call("DELETE", browser.base, timeout=30)
        except Exception:  # the group kill below ends Chromium anyway
            pass
    finally:
        kill_group(proc, grace=5)
        shutil.rmtree(profile, ignore_errors=True)


# --------------------------------------------------------------------------- servers


@dataclass(frozen=True)
class UiStack:
    airflow_url: str
    mlflow_url: str
    kibana_url: str
    env: dict


def _timed(label: str, fn, *args, **kwargs):
    started = time.monotonic()
    try:
        return fn(*args, **kwargs)
    finally:
        DURATIONS[label] = time.monotonic() - started


@pytest.fixture(scope="module")
def ui_stack(chromium) -> UiStack:
    """DAG runs and a champion in temporary stores, served by real Airflow and MLflow servers."""
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="bp-browser-"))
    mlflow_db = root / "mlflow.db"
    airflow_port, mlflow_port = free_port(), free_port()
    mlflow_url = f"http://127.0.0.1:{mlflow_port}"
    kibana_url = "http://127.0.0.1:5601"  # only a link target: Kibana need not run
    env = airflow_test_env(root)  # the recipe of tests/integration/test_airflow_dags.py ...
    home = Path(env["AIRFLOW_HOME"])
    env.update({
        # ... plus the UI: no login form (simple auth manager, everyone is admin), a fixed
        # JWT secret, and the plugin's nav links pointing at this test's servers.
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__API_AUTH__JWT_SECRET": os.urandom(16).hex(),
        "AIRFLOW__CORE__PARALLELISM": "4",
        "BP_MLFLOW_UI_URL": mlflow_url,
        "BP_KIBANA_URL": kibana_url,
        # mlflow server's background job runner (huey consumers) is not needed here.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    })
    servers: list[subprocess.Popen] = []
    try:
        proc = _timed("airflow db migrate", subprocess.run, [AIRFLOW, "db", "migrate"], env=env, cwd=REPO,
                      capture_output=True, text=True, timeout=RUN_TIMEOUT)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

        # Small parameters: a 400-reading data set, a 5000-reading hold-out (the gate promotes a
        # first model only when it beats the rules alone; on 1000 readings this tiny one does not).
        _timed("dags test bp_generate_data", dags_test, env, "bp_generate_data", "2026-03-02",
               {"patients": 20, "readings": 400})
        _timed("dags test bp_train_model", dags_test, env, "bp_train_model", "2026-03-02")
        log = _timed("dags test bp_promote_model", dags_test, env, "bp_promote_model", "2026-03-02",
                     {"holdout_readings": 5000})
        assert "promotion decision: promoted" in log, log[-3000:]

        # The UI lists serialized DAGs. `dags test` parses the whole folder and writes all
        # five (seen with 3.3.2); reserialize only if that ever changes.
        if not set(DAG_IDS) <= serialized_dag_ids(home / "airflow.db"):
            proc = _timed("airflow dags reserialize", subprocess.run, [AIRFLOW, "dags", "reserialize"], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT)
            assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

        t0 = time.monotonic()
        api, api_log = start_server("airflow-api-server", [AIRFLOW, "api-server", "--host", "127.0.0.1",
                                                           "--port", str(airflow_port), "--workers", "1"],
                                    env, root)
        servers.append(api)
        mlf, mlf_log = start_server("mlflow-server", [str(BIN / "mlflow"), "server",
                                                      "--backend-store-uri", f"sqlite:///{mlflow_db}",
                                                      "--artifacts-destination", str(root / "mlartifacts"),
                                                      "--host", "127.0.0.1", "--port", str(mlflow_port),
                                                      "--workers", "1"], env, root)
        servers.append(mlf)
        airflow_url = f"http://127.0.0.1:{airflow_port}"
        wait_http("airflow api-server", f"{airflow_url}/api/v2/monitor/health", api, api_log)
        wait_http("mlflow server", f"{mlflow_url}/health", mlf, mlf_log)
        DURATIONS["servers up (api-server, mlflow server)"] = time.monotonic() - t0
        DURATIONS["fixture set-up"] = time.monotonic() - started
        t0 = time.monotonic()
        yield UiStack(airflow_url, mlflow_url, kibana_url, env)
        DURATIONS["browser checks"] = time.monotonic() - t0
    finally:
        t0 = time.monotonic()
        for server in servers:
            kill_group(server)
        shutil.rmtree(root, ignore_errors=True)
        DURATIONS["servers stopped"] = time.monotonic() - t0
        print("\n[browser] " + "; ".join(f"{what} {seconds:.1f} s" for what, seconds in DURATIONS.items()))
