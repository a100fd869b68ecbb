"""Serve the promoted model to the consumer, and follow promotions without a restart.

``ModelProvider`` follows a registry alias (``champion``, or ``challenger`` for shadow
scoring): when it points at another version it loads ``models:/NAME/<version>`` and swaps
it in between batches, the checks and downloads on a background thread so a slow or
unreachable registry never holds up a batch. It never raises: without a model the
consumer runs on the rules; a challenger that cannot be loaded is dropped. With
``BP_MODEL_PATH`` it serves a joblib file. Details: docs/internals.md#serving.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from bp_core.features import FEATURE_NAMES, feature_names_for_width, model_matrix
from bp_core.settings import Settings

log = logging.getLogger(__name__)

FAST_FAIL_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


@dataclass(frozen=True)
class ServedModel:
    """A model ready to score feature matrices (built by ``bp_core.features.model_matrix``
    from ``feature_names``)."""

    name: str            # registered model name, or 'file:<basename>' for BP_MODEL_PATH
    version: str         # registry version number as str, or a short sha256 of the file
    predict_proba: Callable[[np.ndarray], np.ndarray]  # feature matrix -> P(anomaly), 1-D float array
    feature_names: tuple[str, ...] = FEATURE_NAMES     # the columns it expects, in order


def served(name: str, version: str, estimator, feature_names: tuple[str, ...] | None = None) -> ServedModel:
    """Wrap a fitted classifier: ``predict_proba`` returns column 1 (P(anomaly)).

    Args:
        name: model name to report.
        version: version to report.
        estimator: a fitted scikit-learn classifier whose class 1 is "anomaly".
        feature_names: the features it expects; None: told by its input width (a joblib
            file has no signature).
    Returns:
        A ``ServedModel`` calling the estimator's own ``predict_proba`` on the numpy
        matrix (no pyfunc, no DataFrame: the fast path).
    """
    estimator_proba = estimator.predict_proba
    if feature_names is None:
        feature_names = feature_names_for_width(getattr(estimator, "n_features_in_", len(FEATURE_NAMES)))
    feature_names = tuple(feature_names)
    single_width = len(FEATURE_NAMES) if feature_names != FEATURE_NAMES else -1

    def predict_proba(features: np.ndarray) -> np.ndarray:
        if features.shape[1] == single_width:
            # A caller that builds the single-reading matrix (``feature_matrix``) gets a
            # context model's scores for readings without history rather than an error.
            features = model_matrix(features[:, 0], features[:, 1], None, feature_names)
        return estimator_proba(features)[:, 1]

    return ServedModel(name=name, version=str(version), predict_proba=predict_proba, feature_names=feature_names)


def registered_feature_names(client, name: str, version: str) -> tuple[str, ...] | None:
    """The features a registered version expects: its signature's input names, else its
    run's ``features`` param (versions logged with an unnamed tensor signature).

    The signature is read through ``models:/`` URIs, which MLflow resolves with its
    process-wide registry URI (``load_version`` sets it to the store the version came from).

    Args:
        client: an ``MlflowClient`` of that store.
        name: registered model name.
        version: version number.
    Returns:
        The names in input order, or None when neither says.
    Raises:
        MlflowException: the registry failed.
    """
    from mlflow.models import get_model_info

    signature = get_model_info(f"models:/{name}/{version}").signature
    if signature is not None and signature.inputs is not None and signature.inputs.has_input_names():
        return tuple(signature.inputs.input_names())
    run_id = client.get_model_version(name, str(version)).run_id
    features = client.get_run(run_id).data.params.get("features") if run_id else None
    return tuple(features.split(",")) if features else None


def file_digest(path: Path) -> str:
    """First 12 hex digits of the file's sha256."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]


class ModelProvider:
    """The model the consumer serves now, refreshed from the registry (or a file)."""

    def __init__(self, settings: Settings, *, refresh_seconds: float = 30.0,
                 clock: Callable[[], float] = time.monotonic, background: bool = False,
                 alias: str | None = None) -> None:
        self._settings = settings
        self.alias = alias or settings.model_alias
        self._keep_when_absent = self.alias == settings.model_alias  # the served model outlives a registry glitch
        self._refresh_seconds = float(refresh_seconds)
        self._clock = clock
        self._background = background
        self._current: ServedModel | None = None   # what the consumer scores with
        self._latest: ServedModel | None = None    # what the refresher loaded last (the same, once swapped)
        self._wanted: str | None = None            # the version the alias pointed at when last looked up
        self._mailbox: ServedModel | None = None   # loaded in the background, not swapped in yet
        self._mailbox_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_check = -float("inf")
        self._client = None
        self._failing = False        # inside an outage: warned already
        self._absent_warned = False  # "no champion" warned already
        self._file_mtime: int | None = None

    @property
    def current(self) -> ServedModel | None:
        """The model to score with, or None (rules-only)."""
        return self._current

    def start(self) -> None:
        """First load, then (``background``) the refresher thread. Never raises:
        without a model, ``current`` stays None."""
        if self._settings.model_path is None and self._settings.mlflow_tracking_uri.startswith(("http://", "https://")):
            for key, value in FAST_FAIL_ENV.items():
                os.environ.setdefault(key, value)
        self._next_check = self._clock() + self._refresh_seconds
        loaded = self._refresh()
        if loaded is not None:
            self._swap_in(loaded)
        if self._background and self._thread is None:
            self._thread = threading.Thread(target=self._refresh_forever, name="bp-model-refresh", daemon=True)
            self._thread.start()

    def maybe_refresh(self) -> bool:
        """Swap in a newer model if there is one. Call it between batches.

        In the background mode this only empties the mailbox (no I/O, no wait); otherwise
        it checks the source when the refresh interval has passed (one clock read when
        not due). Never raises.

        Returns:
            True if a different model was swapped in.
        """
        if self._background:
            with self._mailbox_lock:
                loaded, self._mailbox = self._mailbox, None
        else:
            now = self._clock()
            if now < self._next_check:
                return False
            self._next_check = now + self._refresh_seconds
            loaded = self._refresh()
        if loaded is None:
            return False
        self._swap_in(loaded)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Stop the refresher thread (a check in progress finishes on its own: daemon)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    # ---------------------------------------------------------------- internals

    def _refresh_forever(self) -> None:
        while not self._stopping.wait(self._refresh_seconds):
            loaded = self._refresh()
            if loaded is not None:
                with self._mailbox_lock:
                    self._mailbox = loaded  # newest wins if the consumer has not taken the last one

    def _swap_in(self, loaded: ServedModel) -> None:
        if loaded is _DROPPED:
            log.info("no %s@%s any more: dropped version %s", self._settings.model_name, self.alias,
                     self._current.version if self._current else "none")
            self._current = None
            return
        previous, self._current = self._current, loaded
        if loaded.name.startswith("file:"):
            log.info("serving model file %s (sha256 %s)", self._settings.model_path, loaded.version)
        else:
            log.info("%s %s version %s (%s@%s)%s", "serving" if self._keep_when_absent else "loaded", loaded.name,
                     loaded.version, loaded.name, self.alias, f", was version {previous.version}" if previous else "")

    def _refresh(self) -> ServedModel | None:
        """Look for a model other than the last one loaded; load and return it, or None."""
        source = str(self._settings.model_path) if self._settings.model_path else self._settings.mlflow_tracking_uri
        try:
            if self._settings.model_path is not None:
                loaded = self._load_newer_file(Path(self._settings.model_path))
            else:
                loaded = self._load_newer_version()
        except Exception as exc:  # the contract: never raise; keep serving what we have
            # Not the served alias, and it has left the version held for one that cannot be
            # loaded: shadow-scoring the old version would gather evidence nobody judges.
            left = (not self._keep_when_absent and self._latest is not None
                    and self._wanted != self._latest.version)
            if not self._failing or left:
                log.warning("cannot refresh the model from %s (%s: %s); %s", source, type(exc).__name__,
                            _first_line(exc), f"{self.alias} version {self._wanted} cannot be loaded: "
                            f"dropping version {self._latest.version}" if left
                            else "keeping version " + self._latest.version if self._latest
                            else "rules-only until it is reachable" if self._keep_when_absent
                            else f"no {self.alias} until it is reachable")
                self._failing = True
            if left:
                self._latest = None
                return _DROPPED
            return None
        if self._failing:
            log.info("model source %s reachable again", source)
            self._failing = False
        if loaded is not None:
            self._latest = None if loaded is _DROPPED else loaded
        return loaded

    def _load_newer_version(self) -> ServedModel | None:
        from bp_core.model.registry import model_cache_dir
        from bp_core.model.registry import client_for, get_alias_version, load_version

        settings = self._settings
        if self._client is None:
            self._client = client_for(settings.mlflow_tracking_uri)
        version = self._wanted = get_alias_version(self._client, settings.model_name, self.alias)
        if version is None:
            if not self._keep_when_absent:
                return _DROPPED if self._latest is not None else None
            # A vanished alias keeps the current model: dropping to rules-only on a
            # registry glitch would be worse than serving the last known champion.
            if not self._absent_warned:
                log.warning("no %s@%s in the registry: %s", settings.model_name, self.alias,
                            "keeping version " + self._latest.version if self._latest else "rules-only")
                self._absent_warned = True
            return None
        self._absent_warned = False
        if self._latest is not None and self._latest.version == version:
            return None
        estimator = load_version(settings.mlflow_tracking_uri, settings.model_name, version, model_cache_dir(settings))
        return served(settings.model_name, version, estimator,
                      registered_feature_names(self._client, settings.model_name, version))

    def _load_newer_file(self, path: Path) -> ServedModel | None:
        import joblib

        mtime = path.stat().st_mtime_ns
        if mtime == self._file_mtime:
            return None
        estimator = joblib.load(path)
        version = file_digest(path)
        self._file_mtime = mtime
        if self._latest is not None and self._latest.version == version:
            return None  # touched, same content
        return served(f"file:{path.name}", version, estimator)


_DROPPED: ServedModel = object()  # type: ignore[assignment]  # handed over when a followed alias is removed


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else ""
