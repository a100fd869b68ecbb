"""Dead letters read back (headers -> fields, reason kinds) and the replay's marks: pure logic."""

from __future__ import annotations

from collections import namedtuple

import pytest

from bp_core.dead_letters.replay import decode_mark, encode_mark
from bp_core.dead_letters.reader import DeadLetter, Summary, parse_replay_header, reason_kind, replay_header

Record = namedtuple("Record", "topic partition offset key value headers")


def record(offset=7, key=b"pat-1", value=b"{}", **headers):
    defaults = {"bp.error.reason": b"not JSON: unexpected character", "bp.error.stage": b"parse",
                "bp.source.topic": b"blood-pressure", "bp.source.partition": b"2", "bp.source.offset": b"41",
                "bp.rejected.at": b"2026-11-30T01:02:03.456789+00:00"}
    defaults.update({k.replace("_", "."): v for k, v in headers.items()})
    return Record("blood-pressure.dlq", 0, offset, key, value, [(k, v) for k, v in defaults.items() if v is not None])


def test_a_record_written_by_the_consumer_reads_back_field_by_field():
    letter = DeadLetter.from_record(record())
    assert (letter.partition, letter.offset, letter.key, letter.value) == (0, 7, b"pat-1", b"{}")
    assert (letter.stage, letter.reason) == ("parse", "not JSON: unexpected character")
    assert letter.source == "blood-pressure/2/41"
    assert (letter.source_partition, letter.source_offset) == (2, 41)
    assert letter.rejected_at.startswith("2026-11-30T01:02:03")


def test_a_null_source_value_comes_back_null_and_an_empty_one_empty():
    assert DeadLetter.from_record(record(value=b"", bp_source_null=b"true")).value is None
    assert DeadLetter.from_record(record(value=b"")).value == b""


def test_missing_or_garbled_headers_leave_fields_empty_not_an_error():
    letter = DeadLetter.from_record(Record("t.dlq", 0, 3, None, b"x", [("bp.source.offset", b"\xff"),
                                                                      ("bp.error.reason", b"\xffbad")]))
    assert letter.stage == "" and letter.source_topic is None and letter.source_offset is None
    assert letter.source == "?/?/?" and letter.reason.endswith("bad")


@pytest.mark.parametrize("reason, kind", [
    ("not JSON: unexpected character at 1:1", "not JSON"),
    ("impossible systolic 400 mmHg (expected 40-300)", "impossible systolic"),
    ("impossible reading 80/120 mmHg: diastolic above systolic", "impossible reading"),
    ("not an Observation: resourceType is 'Patient'", "not an Observation"),
    ("sha1-1479837: not an Observation: resourceType is 'Patient'", "not an Observation"),
    ("b-7: missing status; b-8: unknown status 'x'", "missing status"),
    ("o-1: status is 'entered-in-error': not a usable result", "status is"),
    ("Observation status 'entered-in-error' is not a usable reading", "Observation status"),
    ("elasticsearch refused document o-17: mapper_parsing_exception: failed to parse field [category]",
     "elasticsearch: mapper_parsing_exception"),
    ("", "(no reason)"),
])
def test_reason_kind_drops_the_particulars(reason, kind):
    assert reason_kind(reason) == kind


def test_filters_by_stage_and_reason_text_ignoring_case():
    letter = DeadLetter.from_record(record())
    assert letter.matches() and letter.matches(stage="parse") and letter.matches(reason="JSON")
    assert letter.matches(stage="parse", reason="unexpected CHARACTER")
    assert not letter.matches(stage="index") and not letter.matches(reason="mapping")


def test_summary_counts_by_stage_and_kind():
    letters = [DeadLetter.from_record(record(offset=i)) for i in range(3)]
    letters.append(DeadLetter.from_record(record(offset=3, bp_error_stage=b"index",
                                                 bp_error_reason=b"elasticsearch refused document x: bad: y")))
    summary = Summary()
    for letter in letters:
        summary.add(letter)
    assert summary.total == 4 and summary.by_stage == {"parse": 3, "index": 1}
    assert summary.by_kind == {("parse", "not JSON"): 3, ("index", "elasticsearch: bad"): 1}


def test_the_replay_header_names_its_dead_letter_and_only_in_its_topic():
    value = replay_header("blood-pressure.dlq", 0, 1234)
    assert value == b"blood-pressure.dlq:0:1234"
    assert parse_replay_header(value, "blood-pressure.dlq") == (0, 1234)
    assert parse_replay_header(value, "other.dlq") is None
    assert parse_replay_header(b"garbage", "blood-pressure.dlq") is None
    assert parse_replay_header(b"a:b:c:d", "a:b") is None


def test_marks_round_trip_and_tell_clean_from_none():
    assert encode_mark(None) == encode_mark({}) == "bp-replay/1:"
    assert decode_mark("bp-replay/1:") == {}
    assert decode_mark(encode_mark({2: 131, 0: 120, 1: 98})) == {0: 120, 1: 98, 2: 131}
    assert encode_mark({2: 131, 0: 120}) == "bp-replay/1:0=120,2=131"
    for foreign in (None, "", "bp-dlq/1:12", "bp-replay/1:0=x", "bp-replay/1:0"):
        assert decode_mark(foreign) is None

