"""Shadow scoring: live evidence about the 'challenger', gathered while the champion serves.

The consumer hands each batch's rules flags and both models' probabilities to a
``ShadowRecorder`` (``record`` never blocks on MLflow); a daemon thread publishes each
consumer member's running totals as metrics of the challenger version's MLflow run
(``shadow/vs-<champion>/<member>/<field>``), and ``read_evidence`` sums the latest value of
each member for the gate. Evidence is a lower bound after a crash and counts shadow
scorings, not distinct readings. The consumer's side and the details:
docs/internals.md#shadow-evidence.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

import numpy as np

from bp_core.model.gate import LiveEvidence, served_flags
from bp_core.settings import Settings

log = logging.getLogger(__name__)

BINS = 10  # histogram of the challenger's P(anomaly): [0, 0.1), [0.1, 0.2) ... [0.9, 1.0]
COUNTS: tuple[str, ...] = ("readings", "champion_alerts", "challenger_alerts", "both", "champion_only",
                           "challenger_only")
BIN_FIELDS: tuple[str, ...] = tuple(f"challenger_p_bin_{i:02d}" for i in range(BINS))
RATE_FIELDS: tuple[str, ...] = ("champion_alert_rate", "challenger_alert_rate")  # for charts; the reader recomputes
KEY_PREFIX = "shadow"


def champion_key(champion_version: str | None) -> str:
    """The evidence group of a champion: ``vs-v<version>``, or ``vs-rules`` with no champion."""
    return f"vs-v{champion_version}" if champion_version else "vs-rules"


def member_id(group: str, *, host: str | None = None, pid: int | None = None, started: float | None = None) -> str:
    """One consumer process's name in the evidence: ``<group>.<host>.<pid>.<start time>``."""
    stamp = datetime.fromtimestamp(time.time() if started is None else started, timezone.utc)
    raw = f"{group}.{host or socket.gethostname()}.{os.getpid() if pid is None else pid}.{stamp:%Y%m%dT%H%M%S}"
    return re.sub(r"[^\w.-]", "_", raw)[:120]


@dataclass
class ShadowEvidence:
    """Live evidence about one challenger version beside one champion (or the rules).

    Served = rules OR model P(anomaly) >= threshold, for either model. Agreement counts
    readings where both alert, only the champion does, only the challenger does.
    """

    challenger_version: str
    champion_version: str | None
    readings: int = 0
    champion_alerts: int = 0
    challenger_alerts: int = 0
    both: int = 0
    champion_only: int = 0
    challenger_only: int = 0
    histogram: list[int] = field(default_factory=lambda: [0] * BINS)
    probability_sum: float = 0.0
    members: int = 1

    def add(self, rule_flags: np.ndarray, champion_proba: np.ndarray | None, challenger_proba: np.ndarray,
            threshold: float) -> None:
        """Count one batch.

        Args:
            rule_flags: the rules' anomaly flags (bool or 0/1), shape (n,).
            champion_proba: the champion's P(anomaly), shape (n,); None when rules alone serve.
            challenger_proba: the challenger's P(anomaly), shape (n,).
            threshold: the serving threshold.
        Raises:
            ValueError: the arrays differ in length.
        """
        challenger_proba = np.asarray(challenger_proba, dtype=np.float64)
        n = challenger_proba.shape[0]
        if np.shape(rule_flags)[0] != n or (champion_proba is not None and np.shape(champion_proba)[0] != n):
            raise ValueError("rule flags and probabilities must have the same length")
        champion = served_flags(rule_flags, champion_proba, threshold)
        challenger = served_flags(rule_flags, challenger_proba, threshold)
        both = int(np.count_nonzero(champion & challenger))
        champion_alerts, challenger_alerts = int(np.count_nonzero(champion)), int(np.count_nonzero(challenger))
        bins = np.bincount(np.clip((challenger_proba * BINS).astype(np.int64), 0, BINS - 1), minlength=BINS)
        self.readings += n
        self.champion_alerts += champion_alerts
        self.challenger_alerts += challenger_alerts
        self.both += both
        self.champion_only += champion_alerts - both
        self.challenger_only += challenger_alerts - both
        self.histogram = [a + int(b) for a, b in zip(self.histogram, bins)]
        self.probability_sum += float(challenger_proba.sum())

    @property
    def champion_alert_rate(self) -> float:
        return self.champion_alerts / self.readings if self.readings else float("nan")

    @property
    def challenger_alert_rate(self) -> float:
        return self.challenger_alerts / self.readings if self.readings else float("nan")

    @property
    def agreement(self) -> float:
        """Share of readings on which both served decisions agree."""
        return 1 - (self.champion_only + self.challenger_only) / self.readings if self.readings else float("nan")

    def live(self) -> LiveEvidence:
        """The totals the gate judges."""
        return LiveEvidence(self.readings, self.champion_alert_rate, self.challenger_alert_rate)

    def snapshot(self) -> "ShadowEvidence":
        return replace(self, histogram=list(self.histogram))

    def to_metrics(self) -> dict[str, float]:
        """Field -> value, as published (counts, histogram bins, the two rates)."""
        values: dict[str, float] = {name: float(getattr(self, name)) for name in COUNTS}
        values.update({name: float(count) for name, count in zip(BIN_FIELDS, self.histogram)})
        if self.readings:
            values.update({name: float(getattr(self, name)) for name in RATE_FIELDS})
        return values

    @classmethod
    def total(cls, challenger_version: str, champion_version: str | None,
              members: dict[str, dict[str, float]]) -> "ShadowEvidence":
        """The sum of several members' published values (``to_metrics`` dicts)."""
        total = cls(challenger_version, champion_version, members=len(members))
        for values in members.values():
            for name in COUNTS:
                setattr(total, name, getattr(total, name) + int(values.get(name, 0)))
            total.histogram = [a + int(values.get(b, 0)) for a, b in zip(total.histogram, BIN_FIELDS)]
        return total

    def lines(self) -> list[str]:
        """Human-readable lines (``bp promote``)."""
        if not self.readings:
            return [f"shadow evidence of v{self.challenger_version} beside "
                    f"{('v' + self.champion_version) if self.champion_version else 'the rules'}: none yet"]
        peak = max(self.histogram) or 1
        lines = [f"shadow evidence of v{self.challenger_version} beside "
                 f"{('v' + self.champion_version) if self.champion_version else 'the rules'}: "
                 f"{self.readings:,} live readings from {self.members} consumer process(es)",
                 f"  served alert rate: champion {self.champion_alert_rate:.4f}, challenger "
                 f"{self.challenger_alert_rate:.4f}",
                 f"  alerts: both {self.both:,}, champion only {self.champion_only:,}, challenger only "
                 f"{self.challenger_only:,} (agreement {self.agreement:.2%})",
                 "  challenger P(anomaly):"]
        for i, count in enumerate(self.histogram):
            lines.append(f"    {i / BINS:.1f}-{(i + 1) / BINS:.1f} {count:>10,} {'#' * round(30 * count / peak)}")
        return lines


def metric_key(champion_version: str | None, member: str, name: str) -> str:
    return f"{KEY_PREFIX}/{champion_key(champion_version)}/{member}/{name}"


def evidence_from_metrics(challenger_version: str, champion_version: str | None,
                          metrics: dict[str, float]) -> ShadowEvidence:
    """Sum the latest published value of each member, for one champion (pure).

    Args:
        challenger_version: the challenger version the run belongs to.
        champion_version: the champion the evidence must have been gathered beside.
        metrics: a run's latest metrics (key -> value).
    """
    prefix = f"{KEY_PREFIX}/{champion_key(champion_version)}/"
    members: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        if key.startswith(prefix):
            member, _, name = key[len(prefix):].rpartition("/")
            if member:
                members.setdefault(member, {})[name] = value
    return ShadowEvidence.total(challenger_version, champion_version, members)


def read_evidence(client, model_name: str, version: str, champion_version: str | None) -> ShadowEvidence:
    """The live evidence published for a challenger version beside a champion.

    Args:
        client: an ``MlflowClient``.
        model_name: registered model name.
        version: the challenger version.
        champion_version: the champion it was compared with (None: the rules).
    Returns:
        The sum over consumer members (``readings`` 0 when none published).
    Raises:
        MlflowException: the registry failed, or the version does not exist.
    """
    run_id = client.get_model_version(model_name, str(version)).run_id
    metrics = client.get_run(run_id).data.metrics if run_id else {}
    return evidence_from_metrics(str(version), champion_version, metrics)


class ShadowRecorder:
    """Accumulate shadow evidence per batch; publish it to MLflow in the background; expose
    it to Prometheus. One per consumer process."""

    def __init__(self, settings: Settings, *, member: str | None = None, registry=None,
                 publish_seconds: float = 30.0) -> None:
        self._settings = settings
        self.member = member or member_id(settings.consumer_group)
        self._publish_seconds = float(publish_seconds)
        self._lock = threading.Lock()
        self._current: ShadowEvidence | None = None
        self._dirty: dict[tuple[str, str | None], ShadowEvidence] = {}  # key -> evidence not published yet
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = None
        self._run_ids: dict[str, str | None] = {}
        self._failing = False
        self.publish_errors = 0
        if registry is not None:
            registry.register(ShadowCollector(self))

    def start(self) -> None:
        """Start the publisher thread (``bp-shadow-publish``)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._publish_forever, name="bp-shadow-publish", daemon=True)
            self._thread.start()

    def record(self, challenger_version: str, champion_version: str | None, rule_flags: np.ndarray,
               champion_proba: np.ndarray | None, challenger_proba: np.ndarray) -> None:
        """Count one batch scored by both models. Never blocks on MLflow.

        A new (challenger, champion) pair starts new evidence; the previous pair's is still
        published.

        Raises:
            ValueError: the arrays differ in length (a bug in the caller).
        """
        batch = ShadowEvidence(str(challenger_version), None if champion_version is None else str(champion_version))
        batch.add(rule_flags, champion_proba, challenger_proba, self._settings.model_threshold)
        key = (batch.challenger_version, batch.champion_version)
        with self._lock:
            current = self._current
            if current is None or (current.challenger_version, current.champion_version) != key:
                current = self._current = ShadowEvidence(*key)
            current.readings += batch.readings
            for name in COUNTS[1:]:
                setattr(current, name, getattr(current, name) + getattr(batch, name))
            current.histogram = [a + b for a, b in zip(current.histogram, batch.histogram)]
            current.probability_sum += batch.probability_sum
            self._dirty[key] = current

    def evidence(self) -> ShadowEvidence | None:
        """A copy of this process's current evidence (None before the first batch)."""
        with self._lock:
            return self._current.snapshot() if self._current else None

    def publish_now(self) -> bool:
        """Publish what is pending, on the caller's thread (tests, ``close``).

        Returns:
            True if everything pending was published.
        """
        with self._lock:
            pending = {key: evidence.snapshot() for key, evidence in self._dirty.items()}
            self._dirty.clear()
        failed = {}
        for key, evidence in pending.items():
            try:
                self._publish(evidence)
            except Exception as exc:  # MLflow down or slow: keep it for the next attempt
                failed[key] = evidence
                self.publish_errors += 1
                if not self._failing:
                    log.warning("cannot publish shadow evidence of v%s to MLflow (%s: %s); retrying every %.0fs",
                                evidence.challenger_version, type(exc).__name__, str(exc).splitlines()[0][:200]
                                if str(exc) else "", self._publish_seconds)
                    self._failing = True
        if failed:
            with self._lock:
                for key, evidence in failed.items():
                    self._dirty.setdefault(key, evidence)  # a newer snapshot of the same key wins
            return False
        if self._failing and pending:
            log.info("shadow evidence published to MLflow again")
            self._failing = False
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Stop the publisher after one last attempt (waits at most ``timeout``)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    # ---------------------------------------------------------------- internals

    def _publish_forever(self) -> None:
        while True:
            self._wake.wait(self._publish_seconds)
            self._wake.clear()
            self.publish_now()
            if self._stopping.is_set():
                return  # after one last attempt

    def _publish(self, evidence: ShadowEvidence) -> None:
        from mlflow.entities import Metric

        from bp_core.model.registry import client_for

        if self._client is None:
            self._client = client_for(self._settings.mlflow_tracking_uri)
        version = evidence.challenger_version
        if version not in self._run_ids:
            self._run_ids[version] = self._client.get_model_version(self._settings.model_name, version).run_id
            if not self._run_ids[version]:
                log.warning("%s version %s has no MLflow run: its shadow evidence is only on /metrics",
                            self._settings.model_name, version)
        run_id = self._run_ids[version]
        if not run_id or not evidence.readings:
            return
        now = int(time.time() * 1000)
        metrics = [Metric(metric_key(evidence.champion_version, self.member, name), value, now, evidence.readings)
                   for name, value in evidence.to_metrics().items()]
        self._client.log_batch(run_id, metrics=metrics, synchronous=True)


class ShadowCollector:
    """Prometheus view of a recorder's current evidence (read at scrape time, no cost per batch)."""

    def __init__(self, recorder: ShadowRecorder) -> None:
        self._recorder = recorder

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        errors = CounterMetricFamily("bp_shadow_publish_errors", "Failed attempts to publish shadow evidence to MLflow")
        errors.add_metric([], self._recorder.publish_errors)
        yield errors
        evidence = self._recorder.evidence()
        if evidence is None:
            return
        labels = ["challenger_version", "champion_version"]
        ids = [evidence.challenger_version, evidence.champion_version or "rules"]
        readings = CounterMetricFamily("bp_shadow_readings", "Readings scored by the challenger in shadow", labels=labels)
        readings.add_metric(ids, evidence.readings)
        alerts = CounterMetricFamily("bp_shadow_alerts", "Served alerts (rules OR model >= threshold) by model",
                                     labels=labels + ["model"])
        alerts.add_metric(ids + ["champion"], evidence.champion_alerts)
        alerts.add_metric(ids + ["challenger"], evidence.challenger_alerts)
        agreement = CounterMetricFamily("bp_shadow_agreement", "Readings by which served decision alerts",
                                        labels=labels + ["outcome"])
        for outcome in ("both", "champion_only", "challenger_only"):
            agreement.add_metric(ids + [outcome], getattr(evidence, outcome))
        rate = GaugeMetricFamily("bp_shadow_alert_rate", "Served alert rate in shadow, by model", labels=labels + ["model"])
        if evidence.readings:
            rate.add_metric(ids + ["champion"], evidence.champion_alert_rate)
            rate.add_metric(ids + ["challenger"], evidence.challenger_alert_rate)
        cumulative = np.cumsum(evidence.histogram).tolist()
        buckets = [(f"{(i + 1) / BINS:.1f}", count) for i, count in enumerate(cumulative[:-1])]
        buckets.append(("+Inf", cumulative[-1]))
        probability = HistogramMetricFamily("bp_shadow_challenger_probability", "The challenger's P(anomaly) in shadow",
                                            labels=labels)
        probability.add_metric(ids, buckets, sum_value=evidence.probability_sum)
        yield from (readings, alerts, agreement, rate, probability)
