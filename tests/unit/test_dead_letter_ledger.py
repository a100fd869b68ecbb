"""The dead-letter ledger's bookkeeping: marks, what is held, what a commit may pass."""

from __future__ import annotations

import pytest

from bp_core.dead_letters.ledger import DeadLetterEntry, DeadLetterLedger, decode_mark, encode_mark, entry_of_headers


def entry(partition: int, offset: int, stage: str = "parse", reason: bytes = b"not JSON") -> DeadLetterEntry:
    return DeadLetterEntry(partition, offset, stage, reason)


def headers(topic: str = "bp", partition: int = 1, offset: int = 40, stage: str = "parse") -> list:
    return [("bp.error.reason", b"not JSON"), ("bp.error.stage", stage.encode()),
            ("bp.source.topic", topic.encode()), ("bp.source.partition", str(partition).encode()),
            ("bp.source.offset", str(offset).encode()), ("bp.rejected.at", b"2026-11-29T00:00:00+00:00")]


def mark(metadata: str) -> int:
    value = decode_mark(metadata)
    assert value is not None, metadata
    return value


@pytest.mark.parametrize("metadata, expected", [
    (encode_mark(0), 0), (encode_mark(123456), 123456), ("", None), (None, None),
    ("bp-dlq/1:", None), ("bp-dlq/1:-3", None), ("bp-dlq/1:12x", None), ("some other tool", None),
])
def test_marks_round_trip_and_anything_else_is_no_mark(metadata, expected):
    assert decode_mark(metadata) == expected


def test_a_record_is_identified_by_its_source_position_and_stage():
    assert entry_of_headers(headers(), "bp") == entry(1, 40)
    assert entry_of_headers(headers(), "bp") != entry(1, 40, reason=b"elasticsearch refused document o-2: ...")
    assert entry_of_headers(headers(stage="index"), "bp") == entry(1, 40, "index")
    assert entry_of_headers(headers(topic="other"), "bp") is None  # another source topic's DLQ record
    assert entry_of_headers([("bp.source.topic", b"bp")], "bp") is None  # not written by bp consume
    assert entry_of_headers(headers(partition="x"), "bp") is None
    assert entry_of_headers(None, "bp") is None


def test_what_was_found_after_the_mark_is_not_sent_again():
    ledger = DeadLetterLedger()
    found = [(entry(1, 40), 7), (entry(2, 41), 8), (entry(1, 42, "index"), 9)]
    assert ledger.take_up(1, dlq_end=10, found=found) == 2
    assert ledger.already_sent(entry(1, 40))
    assert ledger.already_sent(entry(1, 42, "index"))
    assert not ledger.already_sent(entry(1, 42))            # same offset, another stage
    assert not ledger.already_sent(entry(1, 42, "index", b"elasticsearch refused document o-2: ..."))
    assert not ledger.already_sent(entry(2, 41))            # partition 2 is not taken up here
    assert not ledger.already_sent(entry(1, 43))


def test_what_is_before_where_this_member_starts_reading_is_not_kept():
    ledger = DeadLetterLedger()
    found = [(entry(1, 10), 0), (entry(1, 20), 1)]
    assert ledger.take_up(1, dlq_end=2, found=found, from_offset=15) == 1
    assert ledger.already_sent(entry(1, 20)) and not ledger.already_sent(entry(1, 10))


def test_a_commit_keeps_the_mark_before_records_of_offsets_it_does_not_cover():
    ledger = DeadLetterLedger()
    ledger.take_up(1, dlq_end=10, found=[(entry(1, 40), 7), (entry(1, 90), 9)])
    assert mark(ledger.commit_metadata(1, 30)) == 7      # 40 and 90 still to be replayed
    assert mark(ledger.commit_metadata(1, 41)) == 9      # 40 is committed now: forgotten
    assert not ledger.already_sent(entry(1, 40))
    assert mark(ledger.commit_metadata(1, 91)) == 10     # nothing left: the DLQ's end at take-up


def test_the_mark_follows_this_process_s_acknowledged_records():
    ledger = DeadLetterLedger()
    ledger.take_up(0, dlq_end=5)
    ledger.take_up(1, dlq_end=5)
    ledger.sent([(entry(0, 10), 5), (entry(1, 3), 6), (entry(0, 11), 7)])
    assert ledger.already_sent(entry(0, 11))
    # Committing offset 12 of partition 0 covers its records; partition 1 has one at 6
    # for offset 3, still uncommitted when offset 2 is committed.
    assert mark(ledger.commit_metadata(0, 12)) == 8
    assert mark(ledger.commit_metadata(1, 2)) == 6
    assert mark(ledger.commit_metadata(1, 4)) == 8
    # A partition this process never wrote to also moves on: its next record comes after.
    ledger.take_up(2, dlq_end=5)
    assert mark(ledger.commit_metadata(2, 100)) == 8


def test_records_sent_but_not_committed_hold_the_mark_back_while_the_next_batch_is_written():
    ledger = DeadLetterLedger()
    ledger.take_up(0, dlq_end=0)
    ledger.sent([(entry(0, 5), 0)])        # batch 1 (offsets 0-9), acknowledged
    metadata = ledger.commit_metadata(0, 10)
    ledger.sent([(entry(0, 15), 1)])       # batch 2 written while batch 1's commit is resent
    assert mark(metadata) == 1
    assert mark(ledger.commit_metadata(0, 10)) == 1  # not past batch 2's record
    assert mark(ledger.commit_metadata(0, 20)) == 2


def test_a_failed_send_holds_the_mark_until_the_dlq_is_read_back():
    ledger = DeadLetterLedger()
    ledger.take_up(0, dlq_end=3)
    ledger.take_up(1, dlq_end=3)
    ledger.send_failed([0])
    assert ledger.stale() == {0: 3}
    ledger.sent([(entry(1, 7), 4)])        # another partition's records go on
    assert mark(ledger.commit_metadata(0, 0)) == 3   # what the failed send left may be at 3
    ledger.read_back([0], [(entry(0, 2), 3), (entry(1, 7), 4)])
    assert ledger.stale() == {}
    assert ledger.already_sent(entry(0, 2))
    assert mark(ledger.commit_metadata(0, 0)) == 3   # its record at 3 is still uncommitted
    assert mark(ledger.commit_metadata(0, 5)) == 5


def test_a_partition_given_up_is_forgotten():
    ledger = DeadLetterLedger()
    ledger.take_up(0, dlq_end=3, found=[(entry(0, 2), 1)])
    ledger.forget([0])
    assert not ledger.knows(0)
    assert not ledger.already_sent(entry(0, 2))
    assert ledger.commit_metadata(0, 10) == ""       # nothing this member can vouch for
    ledger.sent([(entry(0, 2), 9)])                 # a write that finished after the revocation
    assert not ledger.knows(0)
