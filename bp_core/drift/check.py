"""One drift check: the live window against the champion's training data.

``check_drift`` reads the window from the sinks, the reference from MLflow and the
champion's data set, compares each model feature, the model's probability and the
alert rate, overall and per device fleet, and returns a ``DriftReport``. Its
``as_dict()`` is the ``bp drift --json`` contract::

    {"drift": bool,
     "window": {"start", "end", "readings"},
     "reference": {"model_version", "dataset_digest"},
     "features": {NAME: {"statistic", "score", "threshold", "drift"}},
     "segments": {FLEET: {"drift", "readings", "patients", "features": {NAME: {...}}}}}

``drift`` is true when any overall comparison or any fleet's drifted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np

from bp_core.drift.live import LiveRows, iso_z, read_archive, read_elasticsearch
from bp_core.drift.reference import (
    Champion, build_references, check_dataset, compared_columns, compared_features, feature_columns, input_fields,
    load_champion, probabilities, with_model,
)
from bp_core.drift.statistics import ALERT_RATE, PROBABILITY, Comparison, Reference, Sample, compare
from bp_core.errors import CannotCompare
from bp_core.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class SegmentReport:
    """One fleet's comparisons."""

    readings: int
    patients: int
    features: dict[str, Comparison]
    own_reference: bool  # compared with the fleet's own training readings (else all of them)

    @property
    def drift(self) -> bool:
        return any(c.drift for c in self.features.values())


@dataclass
class DriftReport:
    """The outcome of one check (see the module docstring for its JSON)."""

    start: datetime
    end: datetime
    readings: int
    patients: int
    model_name: str
    model_version: str
    dataset_digest: str | None
    dataset_source: str
    features: dict[str, Comparison]
    segments: dict[str, SegmentReport] = field(default_factory=dict)

    @property
    def drift(self) -> bool:
        return any(c.drift for c in self.features.values()) or any(s.drift for s in self.segments.values())

    def drifted(self) -> list[str]:
        """What drifted, as ``NAME`` (overall) and ``FLEET/NAME``."""
        names = [name for name, c in self.features.items() if c.drift]
        names += [f"{fleet}/{name}" for fleet, s in self.segments.items() for name, c in s.features.items() if c.drift]
        return names

    def as_dict(self) -> dict:
        return {
            "drift": self.drift,
            "window": {"start": iso_z(self.start), "end": iso_z(self.end), "readings": self.readings},
            "reference": {"model_version": self.model_version, "dataset_digest": self.dataset_digest},
            "features": {name: c.as_dict() for name, c in self.features.items()},
            "segments": {fleet: {"drift": s.drift, "readings": s.readings, "patients": s.patients,
                                 "features": {name: c.as_dict() for name, c in s.features.items()}}
                         for fleet, s in self.segments.items()},
        }

    def table(self) -> str:
        """A readable summary: one row per quantity, a column per fleet."""
        fleets = list(self.segments)
        lines = [
            f"window   {iso_z(self.start)} .. {iso_z(self.end)}: {self.readings:,} readings, {self.patients:,} patients",
            f"champion {self.model_name} v{self.model_version}, trained on {self.dataset_source}",
            f"drift    {'YES: ' + ', '.join(self.drifted()) if self.drift else 'no'}",
            "",
            "score / threshold ('*' = drift); statistic: Wasserstein distance in reference SDs, "
            "alert_rate: relative difference",
        ]
        width = max([len(n) for n in self.features] + [8])
        header = f"{'':<{width}}  {'overall':>15}" + "".join(f"  {f[:15]:>15}" for f in fleets)
        lines += [header, f"{'readings':<{width}}  {self.readings:>15,}"
                  + "".join(f"  {self.segments[f].readings:>15,}" for f in fleets)]
        for name, comparison in self.features.items():
            row = f"{name:<{width}}  {_cell(comparison):>15}"
            row += "".join(f"  {_cell(self.segments[f].features.get(name)):>15}" for f in fleets)
            lines.append(row)
        return "\n".join(lines)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``24h``, ``7d``, ``2w`` (a positive whole number and a unit).

    Raises:
        UsageError: anything else.
    """
    import re

    from bp_core.errors import UsageError

    match = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", text or "")
    if not match or int(match.group(1)) == 0:
        raise UsageError(f"not a duration: {text!r} (a positive whole number and a unit s, m, h, d or w, e.g. 24h)")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def _cell(comparison: Comparison | None) -> str:
    if comparison is None or comparison.score != comparison.score:
        return "n/a"
    return f"{comparison.score:.3f}/{comparison.threshold:.2f}{'*' if comparison.drift else ' '}"


def utc(moment: datetime) -> datetime:
    """A plain ``datetime`` in UTC (naive means UTC; pendulum and others become stdlib)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return datetime.fromtimestamp(moment.timestamp(), timezone.utc)


def es_client(settings: Settings):
    from bp_core.clients import elasticsearch

    return elasticsearch(settings, request_timeout=60)


def read_window(settings: Settings, fields: list[str], start: datetime, end: datetime, es=None) -> LiveRows:
    """Every reading the consumer scored in ``[start, end)``: anomalies and archive.

    Raises:
        CannotCompare: Elasticsearch could not be read.
    """
    from concurrent.futures import ThreadPoolExecutor

    own = es is None
    es = es_client(settings) if own else es
    # The archive is decoded here while Elasticsearch aggregates on its own threads.
    with ThreadPoolExecutor(max_workers=1) as pool:
        archived = pool.submit(read_archive, settings.archive_dir, settings.topic, fields, start, end)
        try:
            anomalies = read_elasticsearch(es, settings.es_index, fields, start, end)
        except Exception as exc:  # the client raises many transport/API types; all mean "not read"
            raise CannotCompare(f"cannot read {settings.es_index} at {settings.es_url}: "
                                f"{type(exc).__name__}: {exc}") from exc
        finally:
            if own:
                es.close()
        return anomalies.extend(archived.result())


def live_sample(rows: LiveRows, champion: Champion) -> tuple[Sample, np.ndarray]:
    """The live rows as a ``Sample`` of the champion's features and probability, and
    each row's fleet."""
    columns = feature_columns(champion.features, rows.inputs)
    columns[PROBABILITY] = probabilities(champion, columns)
    columns = compared_columns(columns, rows.inputs)
    patients = set().union(*rows.patients.values()) if rows.patients else set()
    return Sample(columns, rows.weights, rows.alerts, len(patients)), rows.fleets


def check_drift(settings: Settings, *, since: timedelta, now: datetime | None = None, es=None) -> DriftReport:
    """Compare the readings ingested in the last ``since`` with the champion's training data.

    Args:
        settings: sinks (``es_index``, ``archive_dir``, ``topic``), MLflow, thresholds.
        since: the window's length, ending at ``now``.
        now: the window's end (default: the current time).
        es: an Elasticsearch client to use (default: one from the settings).
    Returns:
        A ``DriftReport``.
    Raises:
        CannotCompare: no champion, no readings in the window, reference data missing.
        MlflowException: the tracking store failed.
    """
    end = utc(now) if now is not None else datetime.now(timezone.utc)
    start = end - since
    from concurrent.futures import ThreadPoolExecutor

    from bp_core.simulation.datasets import load_dataset

    champion = load_champion(settings)
    parquet = check_dataset(champion)
    # The window is read (mostly waiting on Elasticsearch and the disk) while the model
    # and its training data load.
    with ThreadPoolExecutor(max_workers=1) as pool:
        reading = pool.submit(read_window, settings, input_fields(champion.features), start, end, es)
        champion = with_model(settings, champion)
        frame = load_dataset(parquet)
        rows = reading.result()
    if rows.readings == 0:
        raise CannotCompare(f"no readings ingested between {iso_z(start)} and {iso_z(end)} "
                            f"({settings.es_index}, {settings.archive_dir})")
    overall_reference, fleet_references = build_references(frame, champion, settings)
    live, fleets = live_sample(rows, champion)
    names = [*compared_features(champion.features), PROBABILITY]
    report = DriftReport(start=start, end=end, readings=live.readings, patients=live.patients,
                         model_name=champion.name, model_version=champion.version,
                         dataset_digest=champion.dataset_digest, dataset_source=str(champion.dataset_source),
                         features=compare(live, overall_reference, names))
    for fleet in sorted(np.unique(fleets).tolist()):
        reference: Reference = fleet_references.get(fleet, overall_reference)
        segment = live.where(fleets == fleet, len(rows.patients.get(fleet, ())))
        report.segments[fleet] = SegmentReport(segment.readings, segment.patients, compare(segment, reference, names),
                                               own_reference=fleet in fleet_references)
    log.info("drift check %s..%s: %d readings, drift=%s %s", iso_z(start), iso_z(end), report.readings, report.drift,
             report.drifted())
    return report


__all__ = ["ALERT_RATE", "DriftReport", "SegmentReport", "check_drift", "parse_duration", "read_window"]
