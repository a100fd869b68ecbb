"""Minimised inputs the fuzzers found; each must be rejected with a reason, never raise.

Finding 1 (mutation fuzzer, deep_nesting): ``parse_payload`` raised ``RecursionError``
when an element the parser quotes in its reason (``{value!r}``) is a JSON array or
object nested ~1000 deep. orjson accepts nesting up to 1024, but ``repr()`` of such a
value exceeds Python's recursion limit (1000), and ``parse_resource`` only converts
AttributeError/TypeError/KeyError/IndexError. One Kafka message then kills the batch
path (the consumer's ``parse_payload`` call is not guarded): a poison pill.
"""

from __future__ import annotations

import orjson
import pytest

from bp_core.fhir.parse import parse_payload
from bp_core.reading import Rejection
from tests.integration.helpers import observation

DEPTH = 1000  # orjson's own limit is 1024; repr() gives up near sys.getrecursionlimit()


def deep(depth: int = DEPTH, kind: str = "array") -> bytes:
    return (b"[" * depth + b"1" + b"]" * depth) if kind == "array" else (b'{"a":' * depth + b"1" + b"}" * depth)


def with_raw(path_text: bytes, raw: bytes, *, obs: dict | None = None) -> bytes:
    """The test Observation with the JSON text ``path_text`` replaced by ``raw``."""
    text = orjson.dumps(obs or observation("deep-1", "pat-1", 120, 80))
    assert path_text in text
    return text.replace(path_text, raw, 1)


CASES = {
    "systolic value": (b'"value":120', b'"value":' + deep()),
    "systolic value (object)": (b'"value":120', b'"value":' + deep(kind="object")),
    "unit code": (b'"code":"mm[Hg]"', b'"code":' + deep()),
    "subject reference": (b'"reference":"Patient/pat-1"', b'"reference":' + deep()),
    "effectiveDateTime": (b'"effectiveDateTime":"2026-03-01T08:30:00+00:00"', b'"effectiveDateTime":' + deep()),
    "resourceType": (b'"resourceType":"Observation"', b'"resourceType":' + deep()),
}


@pytest.mark.parametrize("case", list(CASES))
def test_deeply_nested_element_is_rejected_not_raised(case):
    path_text, raw = CASES[case]
    results = parse_payload(with_raw(path_text, raw))  # must not raise RecursionError
    assert len(results) == 1 and isinstance(results[0], Rejection)
    assert results[0].reason.strip()
    assert len(results[0].reason) < 10_000  # a reason quotes the element, it does not dump it


def test_deeply_nested_data_absent_reason_text_is_rejected_not_raised():
    obs = observation("deep-2", "pat-1", 120, 80)
    obs["component"][1].pop("valueQuantity")
    obs["component"][1]["dataAbsentReason"] = {"text": "@@DEEP@@"}
    results = parse_payload(with_raw(b'"@@DEEP@@"', deep(), obs=obs))
    assert len(results) == 1 and isinstance(results[0], Rejection) and "diastolic" in results[0].reason


def test_nesting_just_below_the_repr_limit_already_works():
    """Control: the same shapes at depth 900 are rejected normally today."""
    for path_text, raw in CASES.values():
        shallow = raw.replace(deep(), deep(900)).replace(deep(kind="object"), deep(900, "object"))
        [result] = parse_payload(with_raw(path_text, shallow))
        assert isinstance(result, Rejection) and result.reason
