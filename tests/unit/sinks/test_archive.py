"""The archive sink: per-partition JSON Lines that survive crashes and replays."""

from __future__ import annotations

import orjson
import pytest

from bp_core.errors import SinkUnavailable
from bp_core.sinks.archive import ArchiveBatch, ArchiveSink, read_archive


def line(partition, offset, entry=0, observation_id=None):
    record = {"observation_id": observation_id or f"p{partition}-o{offset}-e{entry}",
              "kafka": {"partition": partition, "offset": offset, "entry": entry}}
    return (offset, entry), record


def batch(*ranges) -> ArchiveBatch:
    """A batch of the given (partition, offsets) ranges."""
    lines = {}
    for partition, offsets in ranges:
        lines.setdefault(partition, []).extend(line(partition, o) for o in offsets)
    return ArchiveBatch(lines)


def ids(tmp_path, topic="t"):
    return [r["observation_id"] for r in read_archive(tmp_path, topic)]


def test_lines_carry_their_kafka_position(tmp_path):
    assert ArchiveSink(tmp_path, "t").write(batch((0, range(3)))) == 3
    records = read_archive(tmp_path, "t")
    assert [r["kafka"] for r in records] == [{"partition": 0, "offset": o, "entry": 0} for o in range(3)]


def test_replay_after_restart_writes_nothing_twice(tmp_path):
    ArchiveSink(tmp_path, "t").write(batch((0, range(5)), (1, range(2))))
    # A restart re-reads from the last committed offset, which may be far behind.
    assert ArchiveSink(tmp_path, "t").write(batch((0, range(8)), (1, range(4)))) == 3 + 2
    assert ids(tmp_path) == [f"p0-o{o}-e0" for o in range(8)] + [f"p1-o{o}-e0" for o in range(4)]


def test_entries_of_one_message_are_positions_too(tmp_path):
    ArchiveSink(tmp_path, "t").write(ArchiveBatch({0: [line(0, 7, 0, "a"), line(0, 7, 1, "b")]}))
    replay = ArchiveBatch({0: [line(0, 7, entry, oid) for entry, oid in enumerate("abc")]})
    assert ArchiveSink(tmp_path, "t").write(replay) == 1
    assert ids(tmp_path) == ["a", "b", "c"]


def test_torn_tail_is_cut_and_replayed(tmp_path):
    ArchiveSink(tmp_path, "t").write(batch((0, range(4))))
    (segment,) = (tmp_path / "t" / "partition-0").glob("*.jsonl")
    with open(segment, "ab") as fh:  # a crash in the middle of writing offset 4
        fh.write(b'{"observation_id": "p0-o4-e0", "kaf')
    assert ArchiveSink(tmp_path, "t").write(batch((0, range(2, 6)))) == 2
    assert ids(tmp_path) == [f"p0-o{o}-e0" for o in range(6)]
    for text in segment.read_bytes().splitlines():
        orjson.loads(text)


def test_segments_rotate_and_keep_positions(tmp_path):
    sink = ArchiveSink(tmp_path, "t", segment_bytes=200)
    for start in range(0, 40, 5):
        sink.write(batch((2, range(start, start + 5))))
    segments = sorted((tmp_path / "t" / "partition-2").glob("*.jsonl"))
    assert len(segments) > 1
    assert segments[0].name == f"{0:020d}.jsonl"
    assert ArchiveSink(tmp_path, "t", segment_bytes=200).write(batch((2, range(30, 45)))) == 5
    assert ids(tmp_path) == [f"p2-o{o}-e0" for o in range(45)]


def test_a_failed_write_is_written_whole_when_retried(tmp_path):
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    sink = ArchiveSink(blocker, "t")  # its root sits under a regular file: mkdir fails
    pending = batch((0, range(3)))
    with pytest.raises(SinkUnavailable, match="archive write failed"):
        sink.write(pending)
    blocker.unlink()
    assert sink.write(pending) == 3
    assert ids(blocker) == [f"p0-o{o}-e0" for o in range(3)]
