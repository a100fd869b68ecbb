"""Test-wide configuration: markers by folder, work units for parallel runs, fixture paths."""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).parent
FIXTURES_DIR = TESTS_DIR / "fixtures"


# `make test` runs the suite on two pytest-xdist workers. A unit of work is a whole file,
# so module fixtures are set up once, or a whole suite when its tests share one session
# resource: the fault suite its own Kafka + Elasticsearch (on fixed ports), the browser
# suite its Chromium and UI servers. The longest units go first (about 420, 300, 230, 160,
# 170, 150, 125 and 115 s on a 2-core machine), so the two workers finish together.
SHARED_SUITES = ("tests/faults/", "tests/browser/")
LONGEST_FIRST = ("tests/faults/", "tests/integration/test_airflow_dags.py", "tests/integration/test_demo.py",
                 "tests/integration/test_scheduler_loop.py", "tests/integration/test_consumer.py",
                 "tests/integration/test_promotion_gate.py", "tests/browser/", "tests/integration/test_consumer_image.py",
                 "tests/integration/test_patient_state.py", "tests/integration/test_stack_anywhere.py",
                 "tests/integration/test_drift.py")


def work_unit(nodeid: str) -> str:
    """The unit of work a test belongs to: its suite when the suite shares one resource,
    else its file."""
    path = nodeid.split("::", 1)[0]
    return next((suite for suite in SHARED_SUITES if path.startswith(suite)), path)


def _rank(nodeid: str) -> int:
    return next((i for i, prefix in enumerate(LONGEST_FIRST) if nodeid.startswith(prefix)), len(LONGEST_FIRST))


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # a hook of pytest-xdist
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadscope`` with our units of work instead of modules. (xdist's own
    ``--dist loadgroup`` silently stops grouping under pytest 9: it rewrites node ids,
    which pytest 9 no longer lets it do; pytest-dev/pytest-xdist#1386.)"""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class WorkUnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return WorkUnitScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
    if hasattr(config, "workerinput"):  # an xdist worker: this order is the work queue's
        items.sort(key=lambda item: _rank(item.nodeid))


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES_DIR


@pytest.fixture(autouse=True)
def _restore_environment():
    """Undo environment changes a test (or MLflow's set_tracking_uri) leaves behind."""
    import os

    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
