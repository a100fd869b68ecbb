"""Property tests: structurally varied FHIR BP Observations, Bundles and NDJSON.

Valid ones must be accepted with the right values; broken ones rejected with a reason
that says what is wrong; retractions accepted whatever their values and time; nothing ever
raises, and every reading's key fits an Elasticsearch id.
"""

from __future__ import annotations

import math

import orjson
from hypothesis import HealthCheck, given, settings, strategies as st

from bp_core.fhir.ids import MAX_KEY_BYTES, reading_key
from bp_core.fhir.parse import parse_common_form, parse_payload, parse_payload_generic
from bp_core.reading import Reading, Rejection
from tests.fuzz.strategies import invalid_observations, retractions, valid_observations

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SMALL = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def check_fast_path_agrees(payload) -> None:
    """The fast path answers only with the reading the full validator gives."""
    common = parse_common_form(payload)
    if common is not None:
        assert parse_payload_generic(payload) == [common], payload


def check_reading(result, expected) -> None:
    assert isinstance(result, Reading), result
    assert result.observation_id == expected["observation_id"]
    assert result.patient_id == expected["patient_id"]
    assert result.effective == expected["effective"]
    assert result.effective.tzinfo is not None
    assert result.systolic_mm_hg == expected["systolic"]
    assert result.diastolic_mm_hg == expected["diastolic"]
    assert result.status == expected["status"]
    assert (result.device_id, result.device_model) == (expected["device_id"], expected["device_model"])
    assert 0 < len(reading_key(result).encode()) <= MAX_KEY_BYTES


@FAST
@given(valid_observations())
def test_every_valid_observation_is_accepted_with_its_values(drawn):
    resource, expected = drawn
    results = parse_payload(orjson.dumps(resource))
    assert len(results) == 1
    check_reading(results[0], expected)
    check_fast_path_agrees(orjson.dumps(resource))


@FAST
@given(valid_observations(), st.sampled_from(["bytes", "str", "bom", "indented"]))
def test_encodings_of_one_observation(drawn, encoding):
    resource, expected = drawn
    payload = {"bytes": orjson.dumps(resource), "str": orjson.dumps(resource).decode(),
               "bom": b"\xef\xbb\xbf" + orjson.dumps(resource),
               "indented": orjson.dumps(resource, option=orjson.OPT_INDENT_2)}[encoding]
    [result] = parse_payload(payload)
    check_reading(result, expected)
    check_fast_path_agrees(payload)


@FAST
@given(retractions())
def test_every_retraction_is_accepted_whatever_its_values_and_time(drawn):
    resource, broken, expected = drawn
    payload = orjson.dumps(resource)
    [result] = parse_payload(payload)
    assert isinstance(result, Reading) and result.retracts, (resource, result)
    assert (result.observation_id, result.patient_id) == (expected["observation_id"], expected["patient_id"])
    if broken == "values":
        assert math.isnan(result.systolic_mm_hg) and math.isnan(result.diastolic_mm_hg)
        assert parse_common_form(payload) is None
    else:
        assert (result.systolic_mm_hg, result.diastolic_mm_hg) == (expected["systolic"], expected["diastolic"])
    assert result.effective is None if broken == "effective" else result.effective == expected["effective"]
    check_fast_path_agrees(payload)


@FAST
@given(invalid_observations())
def test_every_broken_observation_is_rejected_with_its_reason(drawn):
    resource, fragment = drawn
    assert parse_common_form(orjson.dumps(resource)) is None
    [result] = parse_payload(orjson.dumps(resource))
    assert isinstance(result, Rejection), (resource, result)
    assert fragment in result.reason, (fragment, result.reason)


@SMALL
@given(st.lists(st.one_of(valid_observations().map(lambda d: ("valid", d)),
                          invalid_observations().map(lambda d: ("invalid", d)),
                          st.just(("other", ({"resourceType": "Patient", "id": "p"}, None)))),
                min_size=1, max_size=4),
       st.sampled_from(["collection", "searchset", "transaction", "batch"]),
       st.sampled_from([None, "urn", "https"]))
def test_bundles_keep_document_order_and_skip_other_resources(items, bundle_type, full_urls):
    entries = []
    for n, (_, (resource, _)) in enumerate(items):
        entry = {"resource": resource}
        if full_urls == "urn":
            entry["fullUrl"] = f"urn:uuid:entry-{n}"
        elif full_urls == "https":  # the resource's own URL when it has an id
            entry["fullUrl"] = f"https://fhir.example.org/r4/{resource.get('resourceType')}/{resource.get('id', n)}"
        if bundle_type == "transaction":
            entry["request"] = {"method": "POST", "url": resource.get("resourceType", "Observation")}
        entries.append(entry)
    bundle = {"resourceType": "Bundle", "type": bundle_type, "entry": entries}
    results = parse_payload(orjson.dumps(bundle))
    observations = [(kind, drawn) for kind, drawn in items
                    if drawn[0].get("resourceType") == "Observation"]
    if not observations:
        assert len(results) == 1 and isinstance(results[0], Rejection) and "no Observation" in results[0].reason
        return
    assert len(results) == len(observations)
    for result, (kind, (resource, expected)) in zip(results, observations):
        if kind == "valid":
            check_reading(result, expected)
            url = f"https://fhir.example.org/r4/Observation/{resource['id']}" if "id" in resource else None
            assert result.full_url == (url if full_urls == "https" else None)
        else:
            assert isinstance(result, Rejection) and expected in result.reason


@SMALL
@given(st.lists(valid_observations(), min_size=2, max_size=4), st.sampled_from(["\n", "\r\n"]),
       st.booleans())
def test_ndjson_lines_are_parsed_one_by_one(drawn, newline, blank_lines):
    lines = [orjson.dumps(resource).decode() for resource, _ in drawn]
    text = (newline + (newline if blank_lines else "")).join(lines) + newline
    results = parse_payload(text.encode())
    assert len(results) == len(drawn)
    for result, (_, expected) in zip(results, drawn):
        check_reading(result, expected)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20)


@settings(max_examples=500, deadline=None)
@given(st.one_of(json_values.map(orjson.dumps), st.binary(max_size=200),
                 st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass"))))
def test_arbitrary_input_never_raises_and_every_rejection_has_a_reason(payload):
    results = parse_payload(payload)
    assert results
    check_fast_path_agrees(payload)
    for result in results:
        assert isinstance(result, (Reading, Rejection))
        if isinstance(result, Rejection):
            assert isinstance(result.reason, str) and result.reason.strip()
