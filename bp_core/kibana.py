"""The Kibana dashboard of ``bp-anomalies``, defined once as data and shipped as code.

``PANELS`` is the single definition: each panel names its Lens visualisation, the
fields it uses and how it buckets and measures them. Two things are generated from it:

* ``saved_objects()``: Kibana 9 saved objects (a data view, one Lens visualisation per
  panel, one dashboard), importable with the saved-objects ``_import`` API;
  ``saved_objects_ndjson()`` is the same as NDJSON, committed as
  ``infra/kibana/bp-monitor.ndjson`` (regenerate with
  ``.venv/bin/python -m bp_core.kibana > infra/kibana/bp-monitor.ndjson``).
* ``panel_queries()``: for each panel, the Elasticsearch search body equivalent to what
  Lens runs (same filters, buckets and metrics, with the dashboard's default time range),
  so the panels are tested against the real index mapping and real queries without
  Kibana.

``import_saved_objects()`` posts the NDJSON to a running Kibana (``bp setup --kibana URL``).

The saved-object shape follows Kibana's own 8.x/9.x sample data (``formBased``
datasource, references named ``indexpattern-datasource-layer-<layerId>``, dashboard
panels pointing at ``panel_<i>`` references); ``typeMigrationVersion`` values are at or
below each type's latest migration, so Kibana 9 migrates the objects on import.
"""

from __future__ import annotations

import base64
import json
import re
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass

from bp_core import rules
from bp_core.errors import BPError

DEFAULT_INDEX = "bp-anomalies"
TIME_FIELD = "@timestamp"
DEFAULT_TIME_FROM = "now-7d"
DEFAULT_TIME_TO = "now"
RECORDS_FIELD = "___records___"  # Lens' pseudo-field of a ``count`` column (not a mapped field)

# Saved-object versions: core 8.8.0 (typeMigrationVersion era); per type, a version at or
# below its latest migration (Kibana refuses a document "from a newer version").
CORE_MIGRATION_VERSION = "8.8.0"
TYPE_MIGRATION_VERSION = {"index-pattern": "7.11.0", "lens": "8.9.0", "dashboard": "8.7.0"}
PANEL_VERSION = "8.11.0"  # dashboard panel (embeddable) version, as in Kibana's sample data


# ---------------------------------------------------------------------------------------
# The dashboard, once, as data
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Match:
    """``field`` holds any of ``values`` (a KQL ``field : ("a" or "b")``, an ES ``terms``)."""

    field: str
    values: tuple[str, ...]

    def kql(self) -> str:
        quoted = [json.dumps(v) for v in self.values]
        return f"{self.field} : {quoted[0]}" if len(quoted) == 1 else f"{self.field} : ({' or '.join(quoted)})"

    def es(self) -> dict:
        return {"terms": {self.field: list(self.values)}}


@dataclass(frozen=True)
class Bucket:
    """How a panel splits its documents (a Lens bucketed column, an ES bucket aggregation)."""

    op: str                                   # terms | date_histogram | filters | range
    label: str
    field: str | None = None                  # None for ``filters``
    size: int = 10                            # terms
    order_by_metric: str | None = None        # terms: order by this metric id (else by count)
    interval: str = "1d"                      # date_histogram
    filters: tuple[tuple[str, Match], ...] = ()              # filters: (label, match)
    ranges: tuple[tuple[float, float | None, str], ...] = ()  # range: (from, to, label)


@dataclass(frozen=True)
class Metric:
    """What a panel measures per bucket (a Lens metric column)."""

    id: str
    op: str                                   # count | max | last_value
    label: str
    field: str | None = None                  # None for ``count``


@dataclass(frozen=True)
class Panel:
    """One dashboard panel: a Lens visualisation and the data it shows."""

    slug: str
    title: str
    description: str
    visualization: str                        # lnsXY | lnsPie | lnsDatatable | lnsMetric
    grid: tuple[int, int, int, int]           # x, y, w, h on the 48-column dashboard grid
    metrics: tuple[Metric, ...]
    bucket: Bucket | None = None
    where: tuple[Match, ...] = ()             # the visualisation's own query
    split: Bucket | None = None               # lnsXY: a breakdown (one series per split bucket)
    series_type: str = "bar"                  # lnsXY
    shape: str = "donut"                      # lnsPie
    rows: int = 0                             # lnsDatatable: also return this many latest hits

    @property
    def fields(self) -> set[str]:
        """Every index field this panel reads."""
        used = {m.field for m in self.metrics if m.field} | {m.field for m in self.where}
        for bucket in (self.bucket, self.split):
            if bucket is not None:
                if bucket.field:
                    used.add(bucket.field)
                used |= {match.field for _, match in bucket.filters}
        return used

    @property
    def row_fields(self) -> list[str]:
        """lnsDatatable: the fields of each row (its key, the time, its last values)."""
        return [self.bucket.field, TIME_FIELD, *(m.field for m in self.metrics if m.op == "last_value")]


COUNT = Metric("count", "count", "Anomalies")
CRISIS = Match("category", (rules.CRISIS,))
HYPERTENSION = Match("anomaly_types", ("systolic_high", "diastolic_high"))
HYPOTENSION = Match("anomaly_types", ("systolic_low", "diastolic_low"))
PROBABILITY_BINS = tuple((round(i / 10, 1), round((i + 1) / 10, 1) if i < 9 else None,
                          f"{i / 10:.1f}–{(i + 1) / 10:.1f}") for i in range(10))
LATEST_COLUMNS = {"patient_id": "Patient", "systolic": "Systolic (mmHg)", "diastolic": "Diastolic (mmHg)",
                  "category": "AHA category", "anomaly_types": "Anomaly types", "model_version": "Model version"}
# Per-patient context (issue 24): a reading at least 20/10 mmHg above or below the mean of
# the patient's previous 7 days (BP_BASELINE_*_DELTA). The deviation itself is not stored:
# the table shows each value beside its baseline.
RISE = Match("anomaly_types", (rules.RISE_FROM_BASELINE,))
DROP = Match("anomaly_types", (rules.DROP_FROM_BASELINE,))
FROM_BASELINE = Match("anomaly_types", RISE.values + DROP.values)
BASELINE_COLUMNS = {"patient_id": "Patient", "systolic": "Systolic (mmHg)",
                    "baseline_systolic": "Baseline systolic (mmHg)", "diastolic": "Diastolic (mmHg)",
                    "baseline_diastolic": "Baseline diastolic (mmHg)", "baseline_readings": "Baseline readings",
                    "anomaly_types": "Anomaly types", "device_model": "Device model"}

PANELS: tuple[Panel, ...] = (
    Panel("total", "Anomalies", "Anomalous readings in the time range.",
          "lnsMetric", (0, 0, 12, 8), (COUNT,)),
    Panel("crises-total", "Hypertensive crises",
          "Readings above 180 systolic and/or 120 diastolic mmHg (AHA hypertensive crisis).",
          "lnsMetric", (12, 0, 12, 8), (COUNT,), where=(CRISIS,)),
    Panel("by-layer", "Which layer flagged", "Clinical rules, the model, or both (detected_by).",
          "lnsPie", (24, 0, 24, 8), (COUNT,), Bucket("terms", "Flagged by", "detected_by", size=5)),
    Panel("per-patient", "Anomalies per patient (top 10)", "Patients with the most anomalous readings.",
          "lnsXY", (0, 8, 24, 14), (COUNT,), Bucket("terms", "Patient", "patient_id", size=10),
          series_type="bar_horizontal"),
    Panel("by-category", "Anomalies by AHA category", "AHA 2017 category of each anomalous reading.",
          "lnsPie", (24, 8, 24, 14), (COUNT,), Bucket("terms", "AHA category", "category", size=10)),
    Panel("by-type", "Anomalies by type", "Which threshold was crossed (a reading may cross two).",
          "lnsXY", (0, 22, 24, 14), (COUNT,), Bucket("terms", "Anomaly type", "anomaly_types", size=10)),
    Panel("hyper-vs-hypo", "Hypertension vs hypotension",
          "Readings above a high threshold vs below a low one (rule-flagged readings).",
          "lnsPie", (24, 22, 24, 14), (COUNT,),
          Bucket("filters", "Direction", filters=(("Hypertension", HYPERTENSION), ("Hypotension", HYPOTENSION))),
          shape="pie"),
    Panel("crises-over-time", "Hypertensive crises per day", "Hypertensive crises over time.",
          "lnsXY", (0, 36, 24, 14), (COUNT,), Bucket("date_histogram", "Day", TIME_FIELD, interval="1d"),
          where=(CRISIS,), series_type="bar"),
    Panel("model-probability", "Model probability distribution",
          "Anomaly probability given by the served model (readings scored by a model only).",
          "lnsXY", (24, 36, 24, 14), (COUNT,),
          Bucket("range", "Model probability", "model_probability", ranges=PROBABILITY_BINS)),
    Panel("latest", "Latest anomalies", "Most recent anomalous readings, newest first.",
          "lnsDatatable", (0, 64, 48, 18),
          (Metric("time", "max", "Time", TIME_FIELD),
           *(Metric(name, "last_value", label, name) for name, label in LATEST_COLUMNS.items())),
          Bucket("terms", "Observation", "observation_id", size=50, order_by_metric="time"),
          rows=50),
    Panel("from-baseline-over-time", "Rises and drops from baseline per day",
          "Readings at least 20/10 mmHg (BP_BASELINE_*_DELTA) above (rise) or below (drop) the mean of the "
          "patient's previous 7 days, even inside the thresholds (rise_from_baseline, drop_from_baseline).",
          "lnsXY", (0, 50, 24, 14), (COUNT,), Bucket("date_histogram", "Day", TIME_FIELD, interval="1d"),
          where=(FROM_BASELINE,), series_type="bar_stacked",
          split=Bucket("filters", "Change from baseline", filters=(("Rise", RISE), ("Drop", DROP)))),
    Panel("by-fleet", "Anomalies by device fleet",
          "Anomalous readings per measuring-device model: a fleet reading high or low shows here "
          "(see bp drift).",
          "lnsXY", (24, 50, 24, 14), (COUNT,), Bucket("terms", "Device model", "device_model", size=10),
          series_type="bar_horizontal"),
    Panel("from-baseline-latest", "Latest rises and drops from baseline",
          "Each reading beside the patient's baseline (mean of the previous 7 days, at least 5 readings), "
          "newest first.",
          "lnsDatatable", (0, 82, 48, 16),
          (Metric("time", "max", "Time", TIME_FIELD),
           *(Metric(name, "last_value", label, name) for name, label in BASELINE_COLUMNS.items())),
          Bucket("terms", "Observation", "observation_id", size=50, order_by_metric="time"),
          where=(FROM_BASELINE,), rows=50),
)

DASHBOARD_TITLE = "bp-monitor: blood-pressure anomalies"


# ---------------------------------------------------------------------------------------
# Saved objects
# ---------------------------------------------------------------------------------------

def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-") or "bp"


def _ids(index_title: str) -> dict[str, str]:
    prefix = _slug(index_title)
    ids = {"data-view": f"{prefix}-data-view", "dashboard": f"{prefix}-dashboard"}
    ids.update({panel.slug: f"{prefix}-lens-{panel.slug}" for panel in PANELS})
    return ids


def _layer_id(panel: Panel) -> str:
    # Stable UUIDs, the form Kibana itself writes (any string works; stable keeps the file diffable).
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"bp-monitor/lens/{panel.slug}"))


def _bucket_column_id(panel: Panel) -> str:
    return f"{panel.slug}-bucket"


def _metric_column_id(panel: Panel, metric: Metric) -> str:
    return f"{panel.slug}-{metric.id}"


def _split_column_id(panel: Panel) -> str:
    return f"{panel.slug}-split"


def _lens_bucket_column(panel: Panel, bucket: Bucket) -> dict:
    if bucket.op == "terms":
        order_metric = bucket.order_by_metric or COUNT.id
        order_column = _metric_column_id(panel, next(m for m in panel.metrics if m.id == order_metric))
        return {"label": bucket.label, "customLabel": True, "dataType": "string", "operationType": "terms",
                "sourceField": bucket.field, "isBucketed": True, "scale": "ordinal",
                "params": {"size": bucket.size, "orderBy": {"type": "column", "columnId": order_column},
                           "orderDirection": "desc", "otherBucket": False, "missingBucket": False,
                           "parentFormat": {"id": "terms"}}}
    if bucket.op == "date_histogram":
        return {"label": bucket.label, "customLabel": True, "dataType": "date", "operationType": "date_histogram",
                "sourceField": bucket.field, "isBucketed": True, "scale": "interval",
                "params": {"interval": bucket.interval, "includeEmptyRows": True, "dropPartials": False}}
    if bucket.op == "filters":
        return {"label": bucket.label, "customLabel": True, "dataType": "string", "operationType": "filters",
                "isBucketed": True, "scale": "ordinal",
                "params": {"filters": [{"input": {"query": match.kql(), "language": "kuery"}, "label": label}
                                       for label, match in bucket.filters]}}
    if bucket.op == "range":
        return {"label": bucket.label, "customLabel": True, "dataType": "string", "operationType": "range",
                "sourceField": bucket.field, "isBucketed": True, "scale": "ordinal",
                "params": {"type": "range", "maxBars": "auto",
                           "ranges": [{"from": lo, "to": hi, "label": label} for lo, hi, label in bucket.ranges],
                           "parentFormat": {"id": "range", "params": {"template": "arrow_right",
                                                                     "replaceInfinity": True}}}}
    raise ValueError(f"unknown bucket operation {bucket.op!r}")


def _lens_metric_column(metric: Metric, field_types: dict[str, str]) -> dict:
    if metric.op == "count":
        return {"label": metric.label, "customLabel": True, "dataType": "number", "operationType": "count",
                "sourceField": RECORDS_FIELD, "isBucketed": False, "scale": "ratio",
                "params": {"emptyAsNull": True}}
    data_type = {"date": "date", "keyword": "string", "boolean": "boolean"}.get(field_types[metric.field], "number")
    if metric.op == "max":
        return {"label": metric.label, "customLabel": True, "dataType": data_type, "operationType": "max",
                "sourceField": metric.field, "isBucketed": False, "scale": "ratio",
                "params": {"emptyAsNull": True}}
    if metric.op == "last_value":
        return {"label": metric.label, "customLabel": True, "dataType": data_type, "operationType": "last_value",
                "sourceField": metric.field, "isBucketed": False,
                "scale": "ratio" if data_type == "number" else "ordinal",
                "filter": {"query": f"{metric.field}: *", "language": "kuery"},
                "params": {"sortField": TIME_FIELD, "showArrayValues": True}}
    raise ValueError(f"unknown metric operation {metric.op!r}")


def _lens_visualization(panel: Panel, layer_id: str) -> dict:
    bucket_id = _bucket_column_id(panel) if panel.bucket else None
    split_id = _split_column_id(panel) if panel.split else None
    metric_ids = [_metric_column_id(panel, m) for m in panel.metrics]
    if panel.visualization == "lnsMetric":
        return {"layerId": layer_id, "layerType": "data", "metricAccessor": metric_ids[0]}
    if panel.visualization == "lnsPie":
        return {"shape": panel.shape, "layers": [{
            "layerId": layer_id, "layerType": "data", "primaryGroups": [bucket_id], "metrics": metric_ids,
            "numberDisplay": "value", "categoryDisplay": "default", "legendDisplay": "default",
            "nestedLegend": False}]}
    if panel.visualization == "lnsXY":
        flags = {"x": True, "yLeft": True, "yRight": True}
        layer = {"layerId": layer_id, "layerType": "data", "seriesType": panel.series_type,
                 "xAccessor": bucket_id, "accessors": metric_ids}
        if split_id:
            layer["splitAccessor"] = split_id
        return {"preferredSeriesType": panel.series_type, "valueLabels": "show", "fittingFunction": "None",
                "legend": {"isVisible": split_id is not None, "position": "right"},
                "axisTitlesVisibilitySettings": flags, "tickLabelsVisibilitySettings": flags,
                "gridlinesVisibilitySettings": flags, "layers": [layer]}
    if panel.visualization == "lnsDatatable":
        return {"layerId": layer_id, "layerType": "data", "rowHeight": "single", "rowHeightLines": 1,
                "columns": [{"columnId": column_id, "isTransposed": False} for column_id in [bucket_id, *metric_ids]],
                "sorting": {"columnId": _metric_column_id(panel, panel.metrics[0]), "direction": "desc"}}
    raise ValueError(f"unknown visualization {panel.visualization!r}")


def _lens_object(panel: Panel, ids: dict[str, str], field_types: dict[str, str]) -> dict:
    layer_id = _layer_id(panel)
    columns = {}
    if panel.split is not None:  # Lens nests a breakdown outside the x-axis buckets: it comes first
        columns[_split_column_id(panel)] = _lens_bucket_column(panel, panel.split)
    if panel.bucket is not None:
        columns[_bucket_column_id(panel)] = _lens_bucket_column(panel, panel.bucket)
    for metric in panel.metrics:
        columns[_metric_column_id(panel, metric)] = _lens_metric_column(metric, field_types)
    query = " and ".join(match.kql() for match in panel.where)
    return {
        "id": ids[panel.slug],
        "type": "lens",
        "coreMigrationVersion": CORE_MIGRATION_VERSION,
        "typeMigrationVersion": TYPE_MIGRATION_VERSION["lens"],
        "managed": False,
        "attributes": {
            "title": panel.title,
            "description": panel.description,
            "visualizationType": panel.visualization,
            "state": {
                "datasourceStates": {"formBased": {"layers": {layer_id: {
                    "columns": columns,
                    "columnOrder": list(columns),
                    "incompleteColumns": {},
                    "sampling": 1,
                    "ignoreGlobalFilters": False,
                }}}},
                "visualization": _lens_visualization(panel, layer_id),
                "query": {"query": query, "language": "kuery"},
                "filters": [],
                "internalReferences": [],
                "adHocDataViews": {},
            },
        },
        "references": [{"type": "index-pattern", "id": ids["data-view"],
                        "name": f"indexpattern-datasource-layer-{layer_id}"}],
    }


def saved_objects(index_title: str = DEFAULT_INDEX) -> list[dict]:
    """The Kibana saved objects: data view, one Lens visualisation per panel, the dashboard.

    Args:
        index_title: the index (or alias, or pattern) the data view points at.
    Returns:
        Saved objects as Kibana's export writes them, the data view first, the dashboard last.
    """
    from bp_core.sinks.es_template import ANOMALY_FIELDS

    field_types = flatten_mapping(ANOMALY_FIELDS)
    ids = _ids(index_title)
    data_view = {
        "id": ids["data-view"],
        "type": "index-pattern",
        "coreMigrationVersion": CORE_MIGRATION_VERSION,
        "typeMigrationVersion": TYPE_MIGRATION_VERSION["index-pattern"],
        "managed": False,
        "attributes": {
            "title": index_title,
            "name": f"bp-monitor anomalies ({index_title})",
            "timeFieldName": TIME_FIELD,
            "fields": "[]",
            "fieldFormatMap": json.dumps({"model_probability": {"id": "percent"}}),
            "runtimeFieldMap": "{}",
            "sourceFilters": "[]",
            "typeMeta": "{}",
            "allowNoIndex": True,  # the dashboard may be imported before the first anomaly
        },
        "references": [],
    }
    lenses = [_lens_object(panel, ids, field_types) for panel in PANELS]
    panels_json, references = [], []
    for i, panel in enumerate(PANELS):
        x, y, w, h = panel.grid
        panels_json.append({
            "version": PANEL_VERSION,
            "type": "lens",
            "gridData": {"x": x, "y": y, "w": w, "h": h, "i": str(i)},
            "panelIndex": str(i),
            "embeddableConfig": {"enhancements": {}},
            "panelRefName": f"panel_{i}",
        })
        references.append({"type": "lens", "id": ids[panel.slug], "name": f"panel_{i}"})
    dashboard = {
        "id": ids["dashboard"],
        "type": "dashboard",
        "coreMigrationVersion": CORE_MIGRATION_VERSION,
        "typeMigrationVersion": TYPE_MIGRATION_VERSION["dashboard"],
        "managed": False,
        "attributes": {
            "title": DASHBOARD_TITLE if index_title == DEFAULT_INDEX else f"{DASHBOARD_TITLE} ({index_title})",
            "description": "Anomalous blood-pressure readings flagged by the clinical rules and the model "
                           "(one document per FHIR Observation; no patient names).",
            "panelsJSON": json.dumps(panels_json),
            "optionsJSON": json.dumps({"useMargins": True, "syncColors": False, "syncCursor": True,
                                       "syncTooltips": False, "hidePanelTitles": False}),
            "timeRestore": True,
            "timeFrom": DEFAULT_TIME_FROM,
            "timeTo": DEFAULT_TIME_TO,
            "refreshInterval": {"pause": False, "value": 30000},  # a live surveillance view
            "version": 1,
            "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps(
                {"query": {"query": "", "language": "kuery"}, "filter": []})},
        },
        "references": references,
    }
    return [data_view, *lenses, dashboard]


def saved_objects_ndjson(index_title: str = DEFAULT_INDEX) -> bytes:
    """``saved_objects(index_title)`` as NDJSON (one object a line), what ``_import`` takes."""
    return b"".join(json.dumps(obj).encode() + b"\n" for obj in saved_objects(index_title))


# ---------------------------------------------------------------------------------------
# Fields
# ---------------------------------------------------------------------------------------

def flatten_mapping(properties: dict, prefix: str = "") -> dict[str, str]:
    """``{dotted.path: type}`` of a mapping's ``properties`` (objects recurse)."""
    flat = {}
    for name, spec in properties.items():
        if "properties" in spec:
            flat.update(flatten_mapping(spec["properties"], f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = spec["type"]
    return flat


_KQL_FIELD = re.compile(r'(?:^|[\s(])"?([@\w][\w.@]*)"?\s*:')


def kql_fields(query: str) -> set[str]:
    """Field names a (simple ``field : value``) KQL query refers to."""
    return set(_KQL_FIELD.findall(query or ""))


def referenced_fields(objects: list[dict]) -> set[str]:
    """Every index field the saved objects refer to.

    Walks data views (time field) and Lens states: column ``sourceField`` (bar Lens'
    ``___records___``), ``params.sortField``, KQL in column filters, ``filters`` buckets
    and the visualisation query.
    """
    fields: set[str] = set()

    def walk(node) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("sourceField", "sortField", "timeFieldName") and isinstance(value, str):
                    if value != RECORDS_FIELD:
                        fields.add(value)
                elif key == "query" and isinstance(value, str) and node.get("language") == "kuery":
                    fields.update(kql_fields(value))
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for obj in objects:
        walk(obj.get("attributes", {}))
    return fields


# ---------------------------------------------------------------------------------------
# Elasticsearch equivalents
# ---------------------------------------------------------------------------------------

def _es_metric(metric: Metric) -> dict | None:
    if metric.op == "count":
        return None  # every bucket's doc_count
    if metric.op == "max":
        return {"max": {"field": metric.field}}
    raise ValueError(metric.op)


def _es_aggs(panel: Panel, time_from: str, time_to: str) -> dict:
    leaf = {m.id: _es_metric(m) for m in panel.metrics if m.op not in ("count", "last_value")}
    last_values = [m.field for m in panel.metrics if m.op == "last_value"]
    if last_values:
        # Lens' last_value: the newest document's value (a top_hits sorted on the time field).
        leaf["last_values"] = {"top_hits": {"size": 1, "sort": [{TIME_FIELD: {"order": "desc"}}],
                                            "_source": {"includes": last_values}}}
    if panel.bucket is None:
        return leaf
    agg = _es_bucket(panel.bucket, time_from, time_to)
    if leaf:
        agg["aggs"] = leaf
    if panel.split is None:
        return {"bucket": agg}
    split = _es_bucket(panel.split, time_from, time_to)
    split["aggs"] = {"bucket": agg}
    return {"split": split}


def _es_bucket(bucket: Bucket, time_from: str, time_to: str) -> dict:
    if bucket.op == "terms":
        order = {bucket.order_by_metric: "desc"} if bucket.order_by_metric else {"_count": "desc"}
        return {"terms": {"field": bucket.field, "size": bucket.size, "order": order}}
    if bucket.op == "date_histogram":
        return {"date_histogram": {"field": bucket.field, "calendar_interval": bucket.interval, "time_zone": "UTC",
                                   "min_doc_count": 0, "extended_bounds": {"min": time_from, "max": time_to}}}
    if bucket.op == "filters":
        return {"filters": {"filters": {label: match.es() for label, match in bucket.filters}}}
    if bucket.op == "range":
        return {"range": {"field": bucket.field, "ranges": [
            {"key": label, "from": lo, **({"to": hi} if hi is not None else {})} for lo, hi, label in bucket.ranges]}}
    raise ValueError(bucket.op)


def panel_query(panel: Panel, *, time_from: str = DEFAULT_TIME_FROM, time_to: str = DEFAULT_TIME_TO) -> dict:
    """The search body equivalent to one panel under the dashboard's time range."""
    filters = [{"range": {TIME_FIELD: {"gte": time_from, "lte": time_to}}}, *(m.es() for m in panel.where)]
    body = {"query": {"bool": {"filter": filters}}, "size": panel.rows, "track_total_hits": True}
    aggs = _es_aggs(panel, time_from, time_to)
    if aggs:
        body["aggs"] = aggs
    if panel.rows:
        # The table's rows as plain hits too: the newest documents first.
        body["sort"] = [{TIME_FIELD: {"order": "desc"}}]
        body["_source"] = panel.row_fields
    return body


def panel_queries(index: str = DEFAULT_INDEX, *, time_from: str = DEFAULT_TIME_FROM,
                  time_to: str = DEFAULT_TIME_TO) -> dict[str, dict]:
    """Panel title -> Elasticsearch search body equivalent to what the panel shows.

    Args:
        index: the index the data view points at. The bodies do not depend on it (run
            them with ``es.search(index=index, **body)``); it is taken for symmetry with
            ``saved_objects``.
        time_from, time_to: the dashboard time range (default: its saved last 7 days).
    Returns:
        ``{title: {"query", "size", "track_total_hits", ["aggs"], ["sort", "_source"]}}``;
        bucketed panels aggregate under ``aggs.bucket`` (under ``aggs.split``'s buckets for
        a panel with a breakdown), metrics under their metric id.
    """
    del index  # see docstring
    return {panel.title: panel_query(panel, time_from=time_from, time_to=time_to) for panel in PANELS}


# ---------------------------------------------------------------------------------------
# Import into a running Kibana
# ---------------------------------------------------------------------------------------

IMPORT_FILENAME = "bp-monitor.ndjson"
_RETRY_STATUSES = {502, 503, 504}  # Kibana starting up, or a proxy in front of it


def _multipart(field_name: str, filename: str, content: bytes) -> tuple[bytes, str]:
    boundary = f"----bp-monitor-{uuid.uuid4().hex}"
    body = (f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="{field_name}"; filename="{filename}"\r\n'
            f"Content-Type: application/ndjson\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _kibana_message(raw: bytes) -> str:
    try:
        payload = json.loads(raw)
    except ValueError:
        return _one_line(raw.decode(errors="replace")) or "(empty response)"
    if isinstance(payload, dict):
        return _one_line(payload.get("message") or payload.get("error") or payload)
    return _one_line(payload)


def import_saved_objects(kibana_url: str, settings, *, attempts: int = 10, delay: float = 3.0,
                         timeout: float = 30.0) -> list[str]:
    """Import the dashboard into Kibana (``POST /api/saved_objects/_import?overwrite=true``).

    The data view points at ``settings.es_index``. Basic auth is sent when
    ``settings.es_username`` is set. A Kibana that is unreachable or not ready yet (502,
    503, 504) is retried ``attempts`` times, ``delay`` seconds apart.

    Returns:
        Lines for the operator ("kibana: imported N objects ...").
    Raises:
        BPError: Kibana stayed unreachable or not ready, refused the request (4xx/5xx,
            with Kibana's message), or reported objects it could not import.
    """
    url = f"{kibana_url.rstrip('/')}/api/saved_objects/_import?overwrite=true"
    body, content_type = _multipart("file", IMPORT_FILENAME, saved_objects_ndjson(settings.es_index))
    headers = {"kbn-xsrf": "true", "Content-Type": content_type, "Accept": "application/json"}
    if settings.es_username:
        token = base64.b64encode(f"{settings.es_username}:{settings.es_password or ''}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    last_problem = ""
    for attempt in range(1, max(attempts, 1) + 1):
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read()
            break
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            if exc.code in _RETRY_STATUSES:
                last_problem = f"not ready (HTTP {exc.code}: {_kibana_message(raw)})"
            else:
                raise BPError(f"kibana: import refused by {kibana_url} (HTTP {exc.code}): {_kibana_message(raw)}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            last_problem = f"unreachable ({_one_line(reason)})"
        if attempt < attempts:
            time.sleep(delay)
    else:
        raise BPError(f"kibana: {kibana_url} {last_problem} after {attempts} attempt(s)")
    try:
        result = json.loads(raw)
    except ValueError:
        raise BPError(f"kibana: unexpected import response from {kibana_url}: {_kibana_message(raw)}") from None
    if not result.get("success"):
        errors = result.get("errors") or []
        detail = "; ".join(f"{e.get('type')}/{e.get('id')}: {(e.get('error') or {}).get('type')}" for e in errors[:5])
        raise BPError(_one_line(f"kibana: import into {kibana_url} failed for {len(errors)} object(s): "
                                f"{detail or _kibana_message(raw)}"))
    dashboard_id = _ids(settings.es_index)["dashboard"]
    return [f"kibana: imported {result.get('successCount', 0)} objects (data view '{settings.es_index}')",
            f"kibana: dashboard at {kibana_url.rstrip('/')}/app/dashboards#/view/{dashboard_id}"]


def main(argv: list[str] | None = None) -> int:
    """Print the saved objects as NDJSON (``python -m bp_core.kibana [INDEX] > file``)."""
    args = sys.argv[1:] if argv is None else argv
    sys.stdout.buffer.write(saved_objects_ndjson(args[0] if args else DEFAULT_INDEX))
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
