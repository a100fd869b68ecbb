"""Prometheus metrics of one consumer process (its own registry, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class ConsumerMetrics:
    """Counters and gauges the consumer updates once per batch."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages = Counter("bp_messages_consumed_total", "Kafka messages consumed", registry=r)
        self.valid = Counter("bp_readings_valid_total", "Valid blood-pressure readings", registry=r)
        self.rejected = Counter("bp_messages_rejected_total", "Messages sent to the dead-letter topic", ["stage"], registry=r)
        self.anomalies = Counter("bp_anomalies_total", "Anomalies indexed into Elasticsearch", ["detected_by"], registry=r)
        self.normals = Counter("bp_normals_archived_total", "Normal readings archived", registry=r)
        self.batch_seconds = Histogram("bp_batch_seconds", "Time to process and commit one batch", registry=r,
                                       buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.lag = Gauge("bp_consumer_lag", "Messages behind the end of the topic (all assigned partitions)", registry=r)
        self.model_version = Gauge("bp_model_info", "The model serving now (value 1)", ["name", "version"], registry=r)
        self.sink_available = Gauge("bp_sinks_available", "1 when every sink accepts writes, 0 while paused", registry=r)
        self.sink_available.set(1)
        self.alerts = Counter("bp_alerts_published_total", "FHIR resources published on the alerts topic", registry=r)
        self.status_changes = Counter("bp_sustained_hypertension_changes_total",
                                      "Patients entering (started) or leaving (ended) sustained hypertension",
                                      ["change"], registry=r)
        self.sustained = Gauge("bp_patients_sustained_hypertension",
                               "Patients of the owned partitions in sustained hypertension", registry=r)
        self.patients = Gauge("bp_patients_in_state", "Patients held in the owned partitions' state", registry=r)
        self.last_lag = 0

    def set_lag(self, lag: int) -> None:
        self.lag.set(lag)
        self.last_lag = lag

    def serve(self, port: int) -> None:
        """Expose ``/metrics`` on ``port`` (all interfaces, for a scraper in a container)."""
        start_http_server(port, registry=self.registry)

    def set_model(self, name: str | None, version: str | None) -> None:
        self.model_version.clear()
        self.model_version.labels(name or "none", version or "rules-only").set(1)
