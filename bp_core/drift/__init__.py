"""Drift monitoring: the live stream against the champion's training data.

Public surface: ``check_drift`` (one check, a ``DriftReport``), ``parse_duration``;
``bp_core.drift.monitor`` records a report in MLflow and Prometheus (the drift DAG).
See docs/drift.md.
"""

from bp_core.drift.check import DriftReport, SegmentReport, check_drift, parse_duration

__all__ = ["DriftReport", "SegmentReport", "check_drift", "parse_duration"]
