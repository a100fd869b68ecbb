"""The live readings of a window, read from the consumer's two sinks.

Every scored reading is in exactly one sink: an anomaly in Elasticsearch (ingestion time
``ingested_at``), a normal reading in the archive (``archived_at``). Both are read by
ingestion time, into ``LiveRows``: distinct combinations of the fields the model's
features need, with the fleet (``device_model``; absent or null: ``unknown``), whether
they were alerts, and how many readings each stands for; plus each fleet's distinct
patients.

- Elasticsearch: composite aggregations, one bucket per distinct (fleet, inputs) and
  per (fleet, patient): the server counts, no document leaves it. The first is run over
  ranges of systolic of about a page each (a page rescans what its query matches).
- Archive: segments whose file was last written before the window are skipped unopened;
  the others are decoded with a ``msgspec`` struct of the needed fields only, then
  grouped with numpy.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

UNKNOWN_FLEET = "unknown"
COMPOSITE_PAGE = 10_000
SEARCHES_AT_ONCE = 3


@dataclass
class LiveRows:
    """Distinct live readings: ``inputs[f][i]`` is field f of row i, ``weights[i]`` its count."""

    inputs: dict[str, np.ndarray]
    fleets: np.ndarray          # object array of fleet names, per row
    alerts: np.ndarray          # 1.0 for anomalies (Elasticsearch), 0.0 for the archive
    weights: np.ndarray
    patients: dict[str, set[str]] = field(default_factory=dict)  # fleet -> patient ids

    @property
    def readings(self) -> int:
        return int(self.weights.sum())

    @staticmethod
    def empty(fields: list[str]) -> "LiveRows":
        return LiveRows({f: np.empty(0) for f in fields}, np.empty(0, dtype=object), np.empty(0), np.empty(0))

    def extend(self, other: "LiveRows") -> "LiveRows":
        patients = {fleet: set(ids) for fleet, ids in self.patients.items()}
        for fleet, ids in other.patients.items():
            patients.setdefault(fleet, set()).update(ids)
        return LiveRows({f: np.concatenate([self.inputs[f], other.inputs[f]]) for f in self.inputs},
                        np.concatenate([self.fleets, other.fleets]), np.concatenate([self.alerts, other.alerts]),
                        np.concatenate([self.weights, other.weights]), patients)


# --------------------------------------------------------------------------- Elasticsearch


def read_elasticsearch(es, index: str, fields: list[str], start: datetime, end: datetime) -> LiveRows:
    """The anomalies ingested in ``[start, end)``, grouped by fleet and input fields.

    Args:
        es: an ``elasticsearch.Elasticsearch`` client.
        index: the anomaly index (or alias); a missing index reads as empty.
        fields: the document fields the features need (e.g. ``systolic``, ``diastolic``).
    Raises:
        elasticsearch.ApiError / TransportError: the query failed.
    """
    query = {"range": {"ingested_at": {"gte": iso_z(start), "lt": iso_z(end)}}}
    rows = LiveRows.empty(fields)
    if not es.indices.exists(index=index):
        return rows
    sources = [{"fleet": {"terms": {"field": "device_model", "missing_bucket": True}}}]
    sources += [{name: {"terms": {"field": name, "missing_bucket": True}}} for name in fields]
    patient_sources = [sources[0], {"patient": {"terms": {"field": "patient_id"}}}]
    # Each page of a composite aggregation scans every document its query matches, so the
    # window is split into parts of about one page each; the parts and the patients'
    # aggregation run at once, Elasticsearch answering each on its own search thread.
    with ThreadPoolExecutor(max_workers=SEARCHES_AT_ONCE) as pool:
        patient_buckets = pool.submit(lambda: list(_composite(es, index, query, patient_sources)))
        parts = [pool.submit(lambda part=part: list(_composite(es, index, part, sources)))
                 for part in _parts(es, index, query)]
        buckets = [bucket for part in parts for bucket in part.result()]
        patient_buckets = patient_buckets.result()
    keys = [bucket["key"] for bucket in buckets]
    counts = [bucket["doc_count"] for bucket in buckets]
    if keys:
        rows = LiveRows(
            {name: np.array([np.nan if k[name] is None else k[name] for k in keys], dtype=np.float64)
             for name in fields},
            np.array([k["fleet"] or UNKNOWN_FLEET for k in keys], dtype=object),
            np.ones(len(keys)),
            np.array(counts, dtype=np.float64),
        )
    for bucket in patient_buckets:
        rows.patients.setdefault(bucket["key"]["fleet"] or UNKNOWN_FLEET, set()).add(bucket["key"]["patient"])
    return rows


def _parts(es, index: str, query: dict) -> list[dict]:
    """``query`` split by ranges of systolic into parts of about ``COMPOSITE_PAGE``
    documents (one systolic value may hold more), plus the documents without one."""
    response = es.search(index=index, size=0, query=query, filter_path="aggregations",
                         aggs={"values": {"histogram": {"field": "systolic", "interval": 1, "min_doc_count": 1}},
                               "without": {"missing": {"field": "systolic"}}})
    aggregations = response.get("aggregations") or {}
    parts, low, count = [], None, 0
    for bucket in (aggregations.get("values") or {}).get("buckets") or []:
        low = bucket["key"] if low is None else low
        count += bucket["doc_count"]
        if count >= COMPOSITE_PAGE:
            parts.append((low, bucket["key"] + 1))
            low, count = None, 0
    if low is not None:
        parts.append((low, None))
    if parts:  # open at both ends: a document indexed since the histogram is not left out
        parts[0], parts[-1] = (None, parts[0][1]), (parts[-1][0] if len(parts) > 1 else None, None)
    queries = [{"bool": {"filter": [query, {"range": {"systolic": _bounds(lo, hi)}}]}} for lo, hi in parts]
    if (aggregations.get("without") or {}).get("doc_count"):
        queries.append({"bool": {"filter": [query], "must_not": [{"exists": {"field": "systolic"}}]}})
    return queries


def _bounds(low: float | None, high: float | None) -> dict:
    return {**({"gte": low} if low is not None else {}), **({"lt": high} if high is not None else {})}


def _composite(es, index: str, query: dict, sources: list[dict]):
    """Every bucket of a composite aggregation, page after page."""
    after = None
    while True:
        composite = {"size": COMPOSITE_PAGE, "sources": sources}
        if after is not None:
            composite["after"] = after
        response = es.search(index=index, size=0, query=query, aggs={"rows": {"composite": composite}},
                             filter_path="aggregations.rows.after_key,aggregations.rows.buckets")
        result = (response.get("aggregations") or {}).get("rows") or {}
        buckets = result.get("buckets") or []
        yield from buckets
        after = result.get("after_key")
        if not buckets or after is None or len(buckets) < COMPOSITE_PAGE:
            return


def iso_z(moment: datetime) -> str:
    """An aware time as UTC ISO 8601 with a ``Z`` (Elasticsearch's and the report's form)."""
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


# --------------------------------------------------------------------------- archive


def read_archive(archive_dir: Path, topic: str, fields: list[str], start: datetime, end: datetime) -> LiveRows:
    """The normal readings archived in ``[start, end)``, grouped by fleet and input fields.

    A segment last modified before ``start`` holds only older lines and is not opened.
    Lines that do not decode (a torn tail being repaired by the consumer) are skipped, and
    so are the readings a ``superseded`` line voids (entered in error, or amended into an
    anomaly) with the superseded lines themselves.

    Args:
        archive_dir: ``settings.archive_dir``.
        topic: the readings topic (the archive's first folder level).
        fields: the record fields the features need.
    """
    import msgspec

    record_type = msgspec.defstruct(
        "ArchiveLine",
        [("patient_id", str), ("observation_id", str), ("archived_at", datetime), ("device_model", str | None, None),
         ("record", str | None, None)]
        + [(name, float | None, None) for name in fields],
        gc=False,
    )
    decoder = msgspec.json.Decoder(record_type)
    start_s = start.timestamp()
    records = []
    for segment in _segments(Path(archive_dir) / topic):
        try:
            stat = segment.stat()
        except FileNotFoundError:
            continue
        if stat.st_mtime < start_s:
            continue
        with open(segment, "rb") as handle:
            data = handle.read()
        try:
            records.extend(decoder.decode_lines(data))
        except msgspec.DecodeError:
            records.extend(_decode_one_by_one(decoder, data))
    voided = {(r.patient_id, r.observation_id) for r in records if r.record == "superseded"}
    records = [r for r in records if start <= r.archived_at < end and r.record is None
               and (r.patient_id, r.observation_id) not in voided]
    if not records:
        return LiveRows.empty(fields)
    fleets = np.array([r.device_model or UNKNOWN_FLEET for r in records], dtype=object)
    patients: dict[str, set[str]] = {}
    for fleet, patient in zip(fleets.tolist(), (r.patient_id for r in records)):
        patients.setdefault(fleet, set()).add(patient)
    fleet_names, fleet_codes = np.unique(fleets, return_inverse=True)
    columns = [np.array([getattr(r, name) for r in records], dtype=np.float64) for name in fields]  # None -> nan
    first, counts = _group([fleet_codes, *columns])
    return LiveRows({name: column[first] for name, column in zip(fields, columns)},
                    fleet_names[fleet_codes[first]], np.zeros(len(first)), counts.astype(np.float64), patients)


def _group(columns: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Rows grouped by equal values in every column: one row index per group and its size.

    Each column is coded by its distinct values (NaN is one value), the codes combined
    into one integer key (mixed radix), and the keys grouped: a 1-D sort, much faster
    than ``np.unique(axis=0)`` on a float matrix.
    """
    key = np.zeros(len(columns[0]), dtype=np.int64)
    radix = 1
    for column in columns:
        distinct, codes = np.unique(column, return_inverse=True)  # NaNs sort last and share a code
        if radix * (len(distinct) + 1) >= 2 ** 62:  # renumber the key so far before it overflows
            _, key = np.unique(key, return_inverse=True)
            radix = int(key.max()) + 1
        key = key * (len(distinct) + 1) + codes
        radix *= len(distinct) + 1
    _, first, counts = np.unique(key, return_index=True, return_counts=True)
    return first, counts


def _segments(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return [Path(directory.path) / name
            for directory in os.scandir(root) if directory.is_dir() and directory.name.startswith("partition-")
            for name in os.listdir(directory.path) if name.endswith(".jsonl")]


def _decode_one_by_one(decoder, data: bytes) -> list:
    import msgspec

    records = []
    for line in data.splitlines():
        if line.strip():
            try:
                records.append(decoder.decode(line))
            except msgspec.DecodeError:
                continue
    return records
