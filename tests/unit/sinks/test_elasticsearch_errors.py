"""Which Elasticsearch answers are refusals for good, and how their reason reads."""

from __future__ import annotations

import pytest
from elastic_transport import ApiResponseMeta, HttpHeaders, NodeConfig
from elasticsearch import BadRequestError, ConnectionError

from bp_core.sinks.elasticsearch import error_reason, refused_for_good


@pytest.mark.parametrize("status, refused", [
    (400, True), (401, True), (403, True), (404, True), (409, True),
    (408, False), (429, False), (500, False), (503, False), (200, False), (None, False), ("400", False),
])
def test_a_refusal_for_good_is_a_4xx_other_than_timeout_and_too_many_requests(status, refused):
    assert refused_for_good(status) is refused


def test_the_reason_is_elasticsearchs_own_type_and_reason():
    meta = ApiResponseMeta(400, "1.1", HttpHeaders(), 0.01, NodeConfig("http", "localhost", 9200))
    body = {"error": {"type": "invalid_index_name_exception", "reason": "Invalid index name [X], must be lowercase"},
            "status": 400}
    assert error_reason(BadRequestError("bad", meta, body)) == \
        "invalid_index_name_exception: Invalid index name [X], must be lowercase"
    assert error_reason(ConnectionError("refused")).startswith("ConnectionError: ")
