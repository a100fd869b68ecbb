"""``ModelProvider`` in the consumer's background mode, served from a joblib file.

The registry path (MLflow aliases, an unreachable tracking server) is covered against a
real store in ``tests/integration/test_model_lifecycle.py`` and ``tests/faults``; here
only the hand-over between the refresher thread and the consumer thread is checked:
a newer model waits in the mailbox until the consumer asks for it between batches, and
a check that hangs never holds the consumer up.
"""

from __future__ import annotations

import threading

import joblib
import numpy as np
import pytest
from sklearn.dummy import DummyClassifier

from bp_core.features import feature_matrix
from bp_core.model.serving import ModelProvider
from bp_core.settings import Settings
from tests.integration.helpers import wait_for

ONE_READING = feature_matrix(np.array([120.0]), np.array([80.0]))


def dump_prior_model(path, labels: list[int]) -> None:
    """A model whose P(anomaly) is the share of 1s in ``labels``, whatever the reading."""
    joblib.dump(DummyClassifier(strategy="prior").fit(np.zeros((len(labels), 1)), labels), path)


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "bp_logreg.pkl"
    dump_prior_model(path, [0, 0, 0, 1])
    return path


@pytest.fixture
def provider(model_file):
    provider = ModelProvider(Settings.from_env().with_(model_path=model_file), refresh_seconds=0.02,
                             background=True)
    provider.start()
    yield provider
    provider.close()


def test_a_newer_model_waits_for_the_consumer_to_take_it(provider, model_file):
    first = provider.current
    assert first.predict_proba(ONE_READING).tolist() == [0.25]  # loaded by start(), before any batch

    dump_prior_model(model_file, [0, 1])
    # The refresher thread loads it, but the batch in progress keeps its model.
    wait_for(lambda: provider._mailbox is not None, timeout=10, interval=0.01, what="the background load")
    assert provider.current is first

    assert provider.maybe_refresh() is True
    assert provider.current.version != first.version
    assert provider.current.predict_proba(ONE_READING).tolist() == [0.5]
    assert provider.maybe_refresh() is False  # taken once


def test_the_same_content_rewritten_is_not_a_new_model(provider, model_file):
    first = provider.current
    dump_prior_model(model_file, [0, 0, 0, 1])  # new mtime, same bytes
    mtime = model_file.stat().st_mtime_ns
    wait_for(lambda: provider._file_mtime == mtime, timeout=10, interval=0.01, what="the rewrite checked")
    assert provider.maybe_refresh() is False and provider.current is first


def test_a_hanging_check_never_holds_up_the_consumer(provider, model_file):
    first = provider.current
    entered, release = threading.Event(), threading.Event()
    newer = ModelProvider(Settings.from_env().with_(model_path=model_file))
    dump_prior_model(model_file, [0, 1])
    newer.start()  # the model the hanging check will hand over once released

    def hanging_check():  # a registry that takes its time (slow download, black-holed host)
        entered.set()
        release.wait(30)
        return newer.current

    provider._refresh = hanging_check
    assert entered.wait(10)

    answers = []
    between_batches = threading.Thread(target=lambda: answers.append(provider.maybe_refresh()))
    between_batches.start()
    between_batches.join(10)
    assert not between_batches.is_alive(), "maybe_refresh waited for the registry"
    assert answers == [False] and provider.current is first

    release.set()
    wait_for(lambda: provider._mailbox is not None, timeout=10, interval=0.01, what="the released load")
    assert provider.maybe_refresh() is True and provider.current is newer.current


def test_close_stops_the_refresher(provider):
    thread = provider._thread
    assert thread.is_alive() and thread.name == "bp-model-refresh"
    provider.close()
    assert not thread.is_alive()


@pytest.mark.parametrize("width, expected", [(1, "single-reading"), (10, "single-reading"), (26, "context")])
def test_a_file_model_says_its_feature_set_by_its_width(tmp_path, width, expected):
    from bp_core.features import FEATURE_SETS
    from bp_core.model.serving import served

    path = tmp_path / "model.pkl"
    joblib.dump(DummyClassifier(strategy="prior").fit(np.zeros((4, width)), [0, 0, 0, 1]), path)
    provider = ModelProvider(Settings.from_env().with_(model_path=path))
    provider.start()
    assert provider.current.feature_names == FEATURE_SETS[expected]
    assert served("m", "1", joblib.load(path), ("systolic_mm_hg",)).feature_names == ("systolic_mm_hg",)


def test_a_context_model_given_the_single_reading_matrix_scores_readings_without_history():
    from sklearn.linear_model import LogisticRegression

    from bp_core.features import CONTEXT_MODEL_FEATURES, model_matrix
    from bp_core.model.serving import served

    rng = np.random.default_rng(0)
    systolic, diastolic = rng.uniform(80, 200, 200), rng.uniform(50, 120, 200)
    matrix = model_matrix(systolic, diastolic, None, CONTEXT_MODEL_FEATURES)
    model = served("m", "1", LogisticRegression(max_iter=5000).fit(matrix, systolic > 140), CONTEXT_MODEL_FEATURES)
    np.testing.assert_array_equal(model.predict_proba(feature_matrix(systolic, diastolic)), model.predict_proba(matrix))
