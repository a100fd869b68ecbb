"""The archive sink: per-partition JSON Lines that survive crashes and replays."""

from __future__ import annotations

import orjson
import pytest

from bp_core.errors import SinkUnavailable
from bp_core.sinks.archive import ArchiveSink, read_archive


def add_range(sink, partition, offsets, entry=0):
    for offset in offsets:
        sink.add(partition, offset, entry, {"observation_id": f"p{partition}-o{offset}-e{entry}"})


def ids(tmp_path, topic="t"):
    return [r["observation_id"] for r in read_archive(tmp_path, topic)]


def test_lines_carry_their_kafka_position(tmp_path):
    sink = ArchiveSink(tmp_path, "t")
    add_range(sink, 0, range(3))
    assert sink.flush() == 3
    records = read_archive(tmp_path, "t")
    assert [r["kafka"] for r in records] == [{"partition": 0, "offset": o, "entry": 0} for o in range(3)]
    assert sink.last_position(0) == (2, 0)


def test_replay_after_restart_writes_nothing_twice(tmp_path):
    first = ArchiveSink(tmp_path, "t")
    add_range(first, 0, range(5))
    add_range(first, 1, range(2))
    first.flush()
    # A restart re-reads from the last committed offset, which may be far behind.
    second = ArchiveSink(tmp_path, "t")
    add_range(second, 0, range(8))
    add_range(second, 1, range(4))
    assert second.flush() == 3 + 2
    assert ids(tmp_path) == [f"p0-o{o}-e0" for o in range(8)] + [f"p1-o{o}-e0" for o in range(4)]


def test_entries_of_one_message_are_positions_too(tmp_path):
    sink = ArchiveSink(tmp_path, "t")
    sink.add(0, 7, 0, {"observation_id": "a"})
    sink.add(0, 7, 1, {"observation_id": "b"})
    sink.flush()
    replay = ArchiveSink(tmp_path, "t")
    for entry, oid in enumerate("abc"):
        replay.add(0, 7, entry, {"observation_id": oid})
    assert replay.flush() == 1
    assert ids(tmp_path) == ["a", "b", "c"]


def test_torn_tail_is_cut_and_replayed(tmp_path):
    sink = ArchiveSink(tmp_path, "t")
    add_range(sink, 0, range(4))
    sink.flush()
    (segment,) = (tmp_path / "t" / "partition-0").glob("*.jsonl")
    with open(segment, "ab") as fh:  # a crash in the middle of writing offset 4
        fh.write(b'{"observation_id": "p0-o4-e0", "kaf')
    replay = ArchiveSink(tmp_path, "t")
    assert replay.last_position(0) == (3, 0)
    add_range(replay, 0, range(2, 6))
    replay.flush()
    assert ids(tmp_path) == [f"p0-o{o}-e0" for o in range(6)]
    for line in segment.read_bytes().splitlines():
        orjson.loads(line)


def test_segments_rotate_and_keep_positions(tmp_path):
    sink = ArchiveSink(tmp_path, "t", segment_bytes=200)
    for start in range(0, 40, 5):
        add_range(sink, 2, range(start, start + 5))
        sink.flush()
    segments = sorted((tmp_path / "t" / "partition-2").glob("*.jsonl"))
    assert len(segments) > 1
    assert segments[0].name == f"{0:020d}.jsonl"
    replay = ArchiveSink(tmp_path, "t", segment_bytes=200)
    assert replay.last_position(2) == (39, 0)
    add_range(replay, 2, range(30, 45))
    replay.flush()
    assert ids(tmp_path) == [f"p2-o{o}-e0" for o in range(45)]


def test_write_failure_keeps_the_batch_for_a_retry(tmp_path):
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    sink = ArchiveSink(blocker, "t")  # its root sits under a regular file: mkdir fails
    add_range(sink, 0, range(3))
    with pytest.raises(SinkUnavailable, match="archive write failed"):
        sink.flush()
    assert sink.pending() == 3
    blocker.unlink()
    assert sink.flush() == 3
    assert ids(blocker) == [f"p0-o{o}-e0" for o in range(3)]
