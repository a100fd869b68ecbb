"""MLflow model-registry helpers: one small function per lifecycle step.

Expected absences (no registered model yet, no such alias) are translated into
``None``; every other MLflow error is re-raised for the caller to decide.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_CHAMPION = "previous-champion"


def model_cache_dir(settings) -> Path:
    """Where downloaded model versions are cached (``data_dir/mlflow/model-cache``)."""
    return Path(settings.data_dir) / "mlflow" / "model-cache"


def client_for(tracking_uri: str):
    """An ``MlflowClient`` bound to one tracking (and registry) URI.

    Args:
        tracking_uri: the MLflow tracking URI (``sqlite:///...``, ``http://...``).
    Returns:
        A new ``mlflow.MlflowClient``.
    """
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def is_absent(exc: BaseException) -> bool:
    """Whether an MLflow error means "that registered model does not exist".

    Args:
        exc: any exception.
    Returns:
        True for an ``MlflowException`` with error code ``RESOURCE_DOES_NOT_EXIST``.
    """
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) and exc.error_code == "RESOURCE_DOES_NOT_EXIST"


def get_alias_version(client, name: str, alias: str) -> str | None:
    """The version number an alias points to.

    Reads the registered model's alias map rather than calling
    ``get_model_version_by_alias``, whose "alias not found" error is a generic
    ``INVALID_PARAMETER_VALUE`` that cannot be told apart from a real bad request.

    Args:
        client: an ``MlflowClient``.
        name: registered model name.
        alias: alias, e.g. ``champion``.
    Returns:
        The version number as a string, or None when the model or the alias does not
        exist.
    Raises:
        MlflowException: any other registry error (server down, permission...).
    """
    try:
        model = client.get_registered_model(name)
    except Exception as exc:
        if is_absent(exc):
            return None
        raise
    version = (model.aliases or {}).get(alias)
    return str(version) if version is not None else None


def set_alias(client, name: str, alias: str, version: str) -> None:
    """Point an alias at a version (moving it if it pointed elsewhere).

    Args:
        client: an ``MlflowClient``.
        name: registered model name.
        alias: alias to set.
        version: version number.
    Raises:
        MlflowException: the model or version does not exist, or the registry failed.
    """
    client.set_registered_model_alias(name, alias, str(version))


def set_version_tags(client, name: str, version: str, tags: dict[str, Any]) -> None:
    """Record tags on a model version (values are stored as strings).

    Args:
        client: an ``MlflowClient``.
        name: registered model name.
        version: version number.
        tags: tag name -> value.
    Raises:
        MlflowException: the version does not exist, or the registry failed.
    """
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, str(value))


def get_version_tags(client, name: str, version: str) -> dict[str, str]:
    """The tags of a model version.

    Args:
        client: an ``MlflowClient``.
        name: registered model name.
        version: version number.
    Returns:
        Tag name -> value.
    Raises:
        MlflowException: the version does not exist, or the registry failed.
    """
    return dict(client.get_model_version(name, str(version)).tags or {})


def load_version(tracking_uri: str, name: str, version: str, cache_dir: Path):
    """Load one registered model version as a scikit-learn estimator, cached by version.

    Sets MLflow's process-wide tracking and registry URIs to ``tracking_uri`` (MLflow
    resolves ``models:/`` URIs through them, whatever is passed per call).

    The first call downloads ``models:/NAME/VERSION`` into ``cache_dir/NAME/VERSION``
    (via a temporary folder renamed into place, so a crash never leaves half a model in
    the cache); later calls for the same version load from disk without contacting the
    server. A version's artifacts are immutable, so the cache never goes stale.

    Args:
        tracking_uri: the MLflow tracking/registry URI.
        name: registered model name.
        version: version number (not an alias: the caller resolved it already).
        cache_dir: folder of the local model cache (created if needed).
    Returns:
        The fitted estimator (for bp-monitor a ``sklearn.pipeline.Pipeline``).
    Raises:
        MlflowException: the version does not exist, or the download failed.
    """
    import mlflow.artifacts
    import mlflow.sklearn

    target = Path(cache_dir) / _safe_name(name) / str(version)
    if not (target / "MLmodel").exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=target.parent))
        try:
            # `models:/` URIs resolve through the process-wide registry URI (MLflow 3.17's
            # ModelsArtifactRepository ignores the URIs passed to download_artifacts), whose
            # default is ./mlflow.db in the CWD: point it at our store. bp-monitor processes
            # talk to one store only, so setting the global is safe.
            mlflow.set_tracking_uri(tracking_uri)
            mlflow.set_registry_uri(tracking_uri)
            local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}",
                                                        dst_path=str(staging), tracking_uri=tracking_uri)
            local_path = Path(local)
            if not (local_path / "MLmodel").exists():
                raise FileNotFoundError(f"no MLmodel in the artifacts of models:/{name}/{version}")
            if target.exists():  # an incomplete earlier attempt
                shutil.rmtree(target)
            os.replace(local_path, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log.info("downloaded models:/%s/%s into %s", name, version, target)
    return mlflow.sklearn.load_model(str(target))


def _safe_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
