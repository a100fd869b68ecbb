"""The Kibana saved objects: structure, fields against the index template, the import client.

Kibana cannot run here. These tests check what can be checked without it: that the
objects are well formed and self-consistent, that every field a panel uses exists in the
strict index template with a type that suits its use, that the committed NDJSON is the
generator's output, and that ``import_saved_objects`` sends the request Kibana's
saved-objects import API documents. Whether Kibana renders each Lens state as intended
is not provable here.
"""

from __future__ import annotations

import base64
import json
import threading
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from bp_core import kibana
from bp_core.errors import BPError
from bp_core.settings import Settings
from bp_core.sinks.es_template import ANOMALY_FIELDS

REPO = Path(__file__).resolve().parents[2]
NDJSON_FILE = REPO / "infra" / "kibana" / "bp-monitor.ndjson"
FIELD_TYPES = kibana.flatten_mapping(ANOMALY_FIELDS)

# Which mapped types each Lens operation may use a field of.
COMPATIBLE = {
    "terms": {"keyword", "boolean"},
    "date_histogram": {"date"},
    "range": {"float", "integer", "long", "double"},
    "max": {"date", "float", "integer", "long", "double"},
    "last_value": {"date", "keyword", "boolean", "float", "integer", "long", "double"},
}


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    return kibana.saved_objects()


def lens_layers(objects):
    for obj in objects:
        if obj["type"] == "lens":
            for layer_id, layer in obj["attributes"]["state"]["datasourceStates"]["formBased"]["layers"].items():
                yield obj, layer_id, layer


def test_every_object_is_well_formed(objects):
    types = [o["type"] for o in objects]
    assert types == ["index-pattern", *["lens"] * len(kibana.PANELS), "dashboard"]
    ids = [o["id"] for o in objects]
    assert len(set(ids)) == len(ids)
    for obj in objects:
        assert {"id", "type", "attributes", "references", "coreMigrationVersion", "typeMigrationVersion"} <= set(obj)
        assert obj["attributes"]["title"]
        assert isinstance(obj["references"], list)


def test_data_view_points_at_the_index_with_its_time_field(objects):
    data_view = objects[0]
    assert data_view["id"] == "bp-anomalies-data-view"
    assert data_view["attributes"]["title"] == "bp-anomalies"
    assert data_view["attributes"]["timeFieldName"] == "@timestamp"


def test_every_reference_points_to_an_object_in_the_file(objects):
    present = {(o["type"], o["id"]) for o in objects}
    for obj in objects:
        for ref in obj["references"]:
            assert (ref["type"], ref["id"]) in present, (obj["id"], ref)


def test_each_lens_layer_references_the_data_view(objects):
    for obj, layer_id, layer in lens_layers(objects):
        assert {"type": "index-pattern", "id": "bp-anomalies-data-view",
                "name": f"indexpattern-datasource-layer-{layer_id}"} in obj["references"]
        assert layer["columnOrder"] and set(layer["columnOrder"]) == set(layer["columns"])


def test_lens_visualization_accessors_name_existing_columns(objects):
    for obj, layer_id, layer in lens_layers(objects):
        vis = obj["attributes"]["state"]["visualization"]
        kind = obj["attributes"]["visualizationType"]
        assert kind in {"lnsXY", "lnsPie", "lnsDatatable", "lnsMetric"}
        if kind == "lnsXY":
            (xy,) = vis["layers"]
            accessors = [xy["xAccessor"], *xy["accessors"], *([xy["splitAccessor"]] if "splitAccessor" in xy else [])]
            assert xy["layerId"] == layer_id
            assert set(accessors) == set(layer["columns"]), obj["id"]  # every column is drawn
        elif kind == "lnsPie":
            (pie,) = vis["layers"]
            accessors = [*pie["primaryGroups"], *pie["metrics"]]
            assert pie["layerId"] == layer_id
        elif kind == "lnsDatatable":
            accessors = [c["columnId"] for c in vis["columns"]] + [vis["sorting"]["columnId"]]
            assert vis["layerId"] == layer_id
        else:
            accessors = [vis["metricAccessor"]]
            assert vis["layerId"] == layer_id
        assert set(accessors) <= set(layer["columns"]), obj["id"]
        for column in layer["columns"].values():
            order = column.get("params", {}).get("orderBy", {})
            if order.get("type") == "column":
                assert order["columnId"] in layer["columns"]


def test_every_column_uses_a_mapped_field_of_a_compatible_type(objects):
    for obj, _, layer in lens_layers(objects):
        for column_id, column in layer["columns"].items():
            op = column["operationType"]
            if op == "count":
                assert column["sourceField"] == kibana.RECORDS_FIELD
                continue
            if op == "filters":
                for f in column["params"]["filters"]:
                    for name in kibana.kql_fields(f["input"]["query"]):
                        assert FIELD_TYPES.get(name) == "keyword", (column_id, name)
                continue
            field = column["sourceField"]
            assert field in FIELD_TYPES, (obj["id"], column_id, field)
            assert FIELD_TYPES[field] in COMPATIBLE[op], (column_id, op, field, FIELD_TYPES[field])
            if op == "last_value":
                assert FIELD_TYPES[column["params"]["sortField"]] == "date"


def test_referenced_fields_all_exist_in_the_template(objects):
    fields = kibana.referenced_fields(objects)
    assert fields <= set(FIELD_TYPES), fields - set(FIELD_TYPES)
    assert {"patient_id", "category", "anomaly_types", "detected_by", "model_probability", "@timestamp",
            "device_model", "baseline_systolic", "baseline_diastolic"} <= fields
    for panel in kibana.PANELS:
        assert panel.fields <= fields


def test_referenced_fields_walks_dotted_paths_and_kql():
    objs = [{"attributes": {"state": {"query": {"query": 'source.topic : "x" and category : ("a" or "b")',
                                                "language": "kuery"},
                                      "columns": {"c": {"sourceField": "source.partition"}}}}}]
    assert kibana.referenced_fields(objs) == {"source.topic", "category", "source.partition"}
    assert FIELD_TYPES["source.partition"] == "integer"


def test_no_patient_names_anywhere(objects):
    text = kibana.saved_objects_ndjson().decode().lower()
    for word in ("patient_name", '"given"', '"family"', '"birthdate"', '"name": "patient'):
        assert word not in text
    assert not any("name" in f for f in kibana.referenced_fields(objects))


def test_dashboard_panels_reference_every_visualization(objects):
    dashboard = objects[-1]
    attributes = dashboard["attributes"]
    panels = json.loads(attributes["panelsJSON"])
    assert len(panels) == len(kibana.PANELS)
    refs = {r["name"]: r for r in dashboard["references"]}
    lens_ids = {o["id"] for o in objects if o["type"] == "lens"}
    assert {refs[p["panelRefName"]]["id"] for p in panels} == lens_ids
    for p in panels:
        assert p["type"] == "lens" and refs[p["panelRefName"]]["type"] == "lens"
        grid = p["gridData"]
        assert grid["i"] == p["panelIndex"] and 0 <= grid["x"] and grid["x"] + grid["w"] <= 48
    assert attributes["timeRestore"] is True
    assert (attributes["timeFrom"], attributes["timeTo"]) == ("now-7d", "now")
    json.loads(attributes["optionsJSON"])
    json.loads(attributes["kibanaSavedObjectMeta"]["searchSourceJSON"])


def test_required_panels_are_there():
    by_title = {p.title: p for p in kibana.PANELS}
    assert by_title["Anomalies per patient (top 10)"].bucket.field == "patient_id"
    assert by_title["Anomalies by AHA category"].visualization == "lnsPie"
    assert by_title["Hypertension vs hypotension"].bucket.op == "filters"
    crises = by_title["Hypertensive crises per day"]
    assert crises.bucket.op == "date_histogram" and crises.where == (kibana.CRISIS,)
    assert by_title["Model probability distribution"].bucket.field == "model_probability"
    assert by_title["Which layer flagged"].bucket.field == "detected_by"
    latest = by_title["Latest anomalies"]
    assert latest.visualization == "lnsDatatable"
    assert {m.field for m in latest.metrics} == {"@timestamp", *kibana.LATEST_COLUMNS}
    # Patient context (issue 24): rises and drops from baseline, over time and row by row.
    over_time = by_title["Rises and drops from baseline per day"]
    assert over_time.where == (kibana.FROM_BASELINE,) and over_time.bucket.op == "date_histogram"
    assert [label for label, _ in over_time.split.filters] == ["Rise", "Drop"]
    assert set(kibana.FROM_BASELINE.values) == {"rise_from_baseline", "drop_from_baseline"}
    table = by_title["Latest rises and drops from baseline"]
    assert table.where == (kibana.FROM_BASELINE,) and table.rows
    assert {"systolic", "baseline_systolic", "diastolic", "baseline_diastolic"} <= {m.field for m in table.metrics}
    # Device fleets (issue 25).
    assert by_title["Anomalies by device fleet"].bucket.field == "device_model"


def test_a_breakdown_is_nested_outside_the_x_axis(objects):
    """Lens orders a breakdown column before the date histogram it splits (esaggs nests it outside)."""
    (obj,) = [o for o in objects if o["attributes"]["title"] == "Rises and drops from baseline per day"]
    (layer,) = obj["attributes"]["state"]["datasourceStates"]["formBased"]["layers"].values()
    kinds = [layer["columns"][c]["operationType"] for c in layer["columnOrder"]]
    assert kinds == ["filters", "date_histogram", "count"]
    (xy,) = obj["attributes"]["state"]["visualization"]["layers"]
    assert layer["columns"][xy["splitAccessor"]]["operationType"] == "filters"
    assert xy["seriesType"] == "bar_stacked" and obj["attributes"]["state"]["visualization"]["legend"]["isVisible"]


def test_ndjson_is_one_json_object_per_line(objects):
    data = kibana.saved_objects_ndjson()
    assert data.endswith(b"\n")
    lines = data.decode().splitlines()
    assert [json.loads(line) for line in lines] == objects


def test_committed_file_matches_the_generator():
    assert NDJSON_FILE.read_bytes() == kibana.saved_objects_ndjson("bp-anomalies"), (
        "infra/kibana/bp-monitor.ndjson is stale: regenerate it with "
        "`.venv/bin/python -m bp_core.kibana > infra/kibana/bp-monitor.ndjson`")


def test_another_index_gets_its_own_data_view_title():
    objs = kibana.saved_objects("bp-anomalies-eu")
    assert objs[0]["attributes"]["title"] == "bp-anomalies-eu"
    data_view_id = objs[0]["id"]
    for obj in objs[1:-1]:
        assert {r["id"] for r in obj["references"]} == {data_view_id}


def test_panel_queries_mirror_the_panels():
    queries = kibana.panel_queries("bp-anomalies")
    assert set(queries) == {p.title for p in kibana.PANELS}
    crisis = queries["Hypertensive crises per day"]
    assert {"terms": {"category": ["hypertensive_crisis"]}} in crisis["query"]["bool"]["filter"]
    assert crisis["aggs"]["bucket"]["date_histogram"]["field"] == "@timestamp"
    latest = queries["Latest anomalies"]
    assert latest["sort"] == [{"@timestamp": {"order": "desc"}}] and latest["size"] == 50
    split = queries["Rises and drops from baseline per day"]["aggs"]["split"]
    assert set(split["filters"]["filters"]) == {"Rise", "Drop"}
    assert split["aggs"]["bucket"]["date_histogram"]["field"] == "@timestamp"
    rows = queries["Latest rises and drops from baseline"]
    assert {"terms": {"anomaly_types": ["rise_from_baseline", "drop_from_baseline"]}} in rows["query"]["bool"]["filter"]
    assert rows["_source"][:2] == ["observation_id", "@timestamp"] and "baseline_systolic" in rows["_source"]


# ---------------------------------------------------------------------------------------
# import_saved_objects
# ---------------------------------------------------------------------------------------

class FakeKibana(BaseHTTPRequestHandler):
    """Kibana's ``POST /api/saved_objects/_import`` as its API reference documents it.

    Checks what Kibana checks (``kbn-xsrf`` header, a multipart/form-data body whose
    ``file`` part has a ``.ndjson`` filename) and answers with the documented success
    shape ``{"success": true, "successCount": N, "successResults": [...]}``. This tests
    our client's request format, which is all that can be tested without a Kibana.
    """

    server_version = "FakeKibana/9"
    replies: list = []      # queued (status, body) answers; default: parse and succeed
    requests: list = []     # what was received: (path, headers, multipart parts)

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        message = BytesParser(policy=HTTP).parsebytes(
            b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + body)
        parts = [(p.get_param("name", header="content-disposition"), p.get_filename(), p.get_payload(decode=True))
                 for p in message.iter_parts()] if message.is_multipart() else []
        type(self).requests.append((self.path, self.headers, parts))  # header names: case-insensitive
        if type(self).replies:
            status, reply = type(self).replies.pop(0)
            return self.reply(status, reply)
        if self.headers.get("kbn-xsrf") is None:
            return self.reply(400, {"statusCode": 400, "error": "Bad Request",
                                    "message": "Request must contain a kbn-xsrf header."})
        if not message.is_multipart() or [p[0] for p in parts] != ["file"] or not parts[0][1].endswith(".ndjson"):
            return self.reply(415, {"statusCode": 415, "error": "Unsupported Media Type",
                                    "message": "Unsupported Media Type"})
        objs = [json.loads(line) for line in parts[0][2].decode().splitlines() if line.strip()]
        self.reply(200, {"success": True, "successCount": len(objs), "errors": [],
                         "successResults": [{"type": o["type"], "id": o["id"], "meta": {"title": o["attributes"]["title"]}}
                                            for o in objs]})

    def reply(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def kibana_url():
    FakeKibana.replies, FakeKibana.requests = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeKibana)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_import_posts_the_ndjson_as_kibana_documents_it(kibana_url):
    lines = kibana.import_saved_objects(kibana_url + "/", Settings(), attempts=1)
    assert lines[0] == f"kibana: imported {len(kibana.saved_objects())} objects (data view 'bp-anomalies')"
    assert lines[1].endswith("/app/dashboards#/view/bp-anomalies-dashboard")
    ((path, headers, parts),) = FakeKibana.requests
    url = urlsplit(path)
    assert url.path == "/api/saved_objects/_import" and parse_qs(url.query) == {"overwrite": ["true"]}
    assert headers["kbn-xsrf"] == "true"
    assert headers["Content-Type"].startswith("multipart/form-data; boundary=")
    assert headers.get("Authorization") is None
    assert parts == [("file", "bp-monitor.ndjson", kibana.saved_objects_ndjson("bp-anomalies"))]


def test_import_sends_basic_auth_and_follows_the_index(kibana_url):
    settings = Settings(es_index="bp-anomalies-eu", es_username="elastic", es_password="s3cret")
    kibana.import_saved_objects(kibana_url, settings, attempts=1)
    ((_, headers, parts),) = FakeKibana.requests
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"elastic:s3cret").decode()
    assert json.loads(parts[0][2].splitlines()[0])["attributes"]["title"] == "bp-anomalies-eu"


def test_import_waits_for_a_kibana_that_is_not_ready(kibana_url):
    FakeKibana.replies = [(503, {"statusCode": 503, "error": "Service Unavailable",
                                 "message": "Kibana server is not ready yet"})] * 2
    lines = kibana.import_saved_objects(kibana_url, Settings(), attempts=3, delay=0)
    assert len(FakeKibana.requests) == 3 and lines[0].startswith("kibana: imported")


def test_import_gives_up_on_a_kibana_that_stays_unready(kibana_url):
    FakeKibana.replies = [(503, {"statusCode": 503, "message": "Kibana server is not ready yet"})] * 2
    with pytest.raises(BPError, match=r"not ready \(HTTP 503: Kibana server is not ready yet\) after 2 attempt"):
        kibana.import_saved_objects(kibana_url, Settings(), attempts=2, delay=0)


def test_import_refused_carries_kibanas_message_on_one_line(kibana_url):
    FakeKibana.replies = [(401, {"statusCode": 401, "error": "Unauthorized",
                                 "message": "[security_exception]: unable to authenticate\nuser [elastic]"})]
    with pytest.raises(BPError) as info:
        kibana.import_saved_objects(kibana_url, Settings(), attempts=3, delay=0)
    message = str(info.value)
    assert "\n" not in message and "HTTP 401" in message and "unable to authenticate user [elastic]" in message
    assert len(FakeKibana.requests) == 1  # a 4xx is not retried


def test_import_reports_objects_kibana_could_not_import(kibana_url):
    FakeKibana.replies = [(200, {"success": False, "successCount": 11, "errors": [
        {"id": "bp-anomalies-dashboard", "type": "dashboard", "title": "x",
         "error": {"type": "missing_references", "references": [{"type": "lens", "id": "nope"}]}}]})]
    with pytest.raises(BPError, match="failed for 1 object.*dashboard/bp-anomalies-dashboard: missing_references"):
        kibana.import_saved_objects(kibana_url, Settings(), attempts=1)


def test_unreachable_kibana_is_a_one_line_error():
    with pytest.raises(BPError) as info:
        kibana.import_saved_objects("http://127.0.0.1:1", Settings(), attempts=2, delay=0, timeout=2)
    message = str(info.value)
    assert message.startswith("kibana: http://127.0.0.1:1 unreachable (") and "after 2 attempt(s)" in message
    assert "\n" not in message
