"""The one settings object: environment variables with working local defaults.

Read once at start-up (``Settings.from_env()``) and passed down; nothing else in the
package reads the environment for these names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from bp_core.errors import UsageError


def _float(env: dict, name: str, default: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError:
        raise UsageError(f"{name} must be a number, got {raw!r}") from None


def _switch(env: dict, name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("on", "true", "1", "yes"):
        return True
    if raw in ("off", "false", "0", "no"):
        return False
    raise UsageError(f"{name} must be on or off, got {env.get(name)!r}")


def _int(env: dict, name: str, default: int) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise UsageError(f"{name} must be a whole number, got {raw!r}") from None
    if value < 0:
        raise UsageError(f"{name} must not be negative, got {value}")
    return value


@dataclass(frozen=True)
class Settings:
    """Runtime configuration. Field defaults are the local stack's."""

    kafka_bootstrap: str = "localhost:9092"
    topic: str = "blood-pressure"
    es_url: str = "http://localhost:9200"
    es_index: str = "bp-anomalies"
    es_username: str | None = None
    es_password: str | None = field(default=None, repr=False)
    archive_dir: Path = Path("data/archive")
    data_dir: Path = Path("data")
    mlflow_tracking_uri: str = "sqlite:///data/mlflow/mlflow.db"
    model_name: str = "bp-anomaly-classifier"
    model_alias: str = "champion"
    model_path: Path | None = None
    consumer_group: str = "bp-consumer"
    model_threshold: float = 0.5
    systolic_high: float = 140.0
    systolic_low: float = 90.0
    diastolic_high: float = 90.0
    diastolic_low: float = 60.0
    # Second wave: FHIR output, patient context, the promotion gate.
    alerts_topic: str = "blood-pressure.alerts"
    patients_topic: str = "patients"
    baseline_systolic_delta: float = 20.0
    baseline_diastolic_delta: float = 10.0
    gate_alert_rate_band: float = 0.10
    gate_brier_margin: float = 0.01
    gate_min_shadow_readings: int = 5000
    patient_context: bool = True           # judge readings against the patient's history
    # Drift monitoring: where the drift DAG leaves Prometheus figures.
    metrics_textfile_dir: Path | None = None   # node-exporter textfile collector folder
    pushgateway_url: str | None = None         # a Prometheus Pushgateway, host:port or URL

    @property
    def dlq_topic(self) -> str:
        """The dead-letter topic: always ``<topic>.dlq``."""
        return f"{self.topic}.dlq"

    @classmethod
    def from_env(cls, env: dict | None = None) -> "Settings":
        """Build settings from environment variables (``BP_*``, ``MLFLOW_TRACKING_URI``).

        Raises:
            UsageError: a variable holds a value of the wrong type.
        """
        env = dict(os.environ if env is None else env)
        data_dir = Path(env.get("BP_DATA_DIR") or "data")
        default_tracking = f"sqlite:///{(data_dir / 'mlflow' / 'mlflow.db').resolve()}"
        model_path = env.get("BP_MODEL_PATH")
        return cls(
            kafka_bootstrap=env.get("BP_KAFKA_BOOTSTRAP") or cls.kafka_bootstrap,
            topic=env.get("BP_TOPIC") or cls.topic,
            es_url=env.get("BP_ES_URL") or cls.es_url,
            es_index=env.get("BP_ES_INDEX") or cls.es_index,
            es_username=env.get("BP_ES_USERNAME") or None,
            es_password=env.get("BP_ES_PASSWORD") or None,
            archive_dir=Path(env.get("BP_ARCHIVE_DIR") or data_dir / "archive"),
            data_dir=data_dir,
            mlflow_tracking_uri=env.get("MLFLOW_TRACKING_URI") or default_tracking,
            model_name=env.get("BP_MODEL_NAME") or cls.model_name,
            model_alias=env.get("BP_MODEL_ALIAS") or cls.model_alias,
            model_path=Path(model_path) if model_path else None,
            consumer_group=env.get("BP_CONSUMER_GROUP") or cls.consumer_group,
            model_threshold=_float(env, "BP_MODEL_THRESHOLD", cls.model_threshold),
            systolic_high=_float(env, "BP_SYSTOLIC_HIGH", cls.systolic_high),
            systolic_low=_float(env, "BP_SYSTOLIC_LOW", cls.systolic_low),
            diastolic_high=_float(env, "BP_DIASTOLIC_HIGH", cls.diastolic_high),
            diastolic_low=_float(env, "BP_DIASTOLIC_LOW", cls.diastolic_low),
            alerts_topic=env.get("BP_ALERTS_TOPIC") or cls.alerts_topic,
            patients_topic=env.get("BP_PATIENTS_TOPIC") or cls.patients_topic,
            baseline_systolic_delta=_float(env, "BP_BASELINE_SYSTOLIC_DELTA", cls.baseline_systolic_delta),
            baseline_diastolic_delta=_float(env, "BP_BASELINE_DIASTOLIC_DELTA", cls.baseline_diastolic_delta),
            gate_alert_rate_band=_float(env, "BP_GATE_ALERT_RATE_BAND", cls.gate_alert_rate_band),
            gate_brier_margin=_float(env, "BP_GATE_BRIER_MARGIN", cls.gate_brier_margin),
            gate_min_shadow_readings=_int(env, "BP_GATE_MIN_SHADOW_READINGS", cls.gate_min_shadow_readings),
            patient_context=_switch(env, "BP_PATIENT_CONTEXT", cls.patient_context),
            metrics_textfile_dir=Path(env.get("BP_METRICS_TEXTFILE_DIR") or data_dir / "metrics"),
            pushgateway_url=env.get("BP_PUSHGATEWAY_URL") or None,
        )

    def with_(self, **changes) -> "Settings":
        """A copy with some fields changed (tests, command-line overrides)."""
        return replace(self, **changes)

    def describe(self) -> dict:
        """The effective configuration for a start-up log line: no secrets."""
        return {
            "kafka_bootstrap": self.kafka_bootstrap,
            "topic": self.topic,
            "dlq_topic": self.dlq_topic,
            "es_url": self.es_url,
            "es_index": self.es_index,
            "es_auth": "basic" if self.es_username else "none",
            "archive_dir": str(self.archive_dir),
            "mlflow_tracking_uri": _redact_uri(self.mlflow_tracking_uri),
            "model": str(self.model_path) if self.model_path else f"models:/{self.model_name}@{self.model_alias}",
            "model_threshold": self.model_threshold,
            "consumer_group": self.consumer_group,
            "alerts_topic": self.alerts_topic,
            "patients_topic": self.patients_topic,
            "baseline_delta": [self.baseline_systolic_delta, self.baseline_diastolic_delta],
            "patient_context": self.patient_context,
            "thresholds": {
                "systolic": [self.systolic_low, self.systolic_high],
                "diastolic": [self.diastolic_low, self.diastolic_high],
            },
        }


def _redact_uri(uri: str) -> str:
    """Hide a password in ``scheme://user:password@host`` URIs."""
    if "://" in uri and "@" in uri.split("://", 1)[1]:
        scheme, rest = uri.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return uri
