"""The normal-readings archive: JSON Lines per Kafka partition, replay-safe.

Layout::

    <archive_dir>/<topic>/partition-<P>/<first offset, 20 digits>.jsonl

One segment file is appended to until it exceeds ``segment_bytes``; the next starts at
the offset of its first line (as Kafka names its own segments). Every line carries its
Kafka position (``kafka.offset`` and ``kafka.entry``, the index of the reading inside the
message, since a Bundle message holds several). Positions only grow within a partition,
so the sink remembers the last position it made durable and skips anything at or before
it: a replay after a crash (offsets not yet committed) writes nothing twice.

Durability: ``flush()`` writes, flushes and ``fsync``s every touched segment before it
returns; the consumer commits offsets only after that. A crash in the middle of a write
can leave a torn last line: on opening a partition the sink truncates the segment back to
its last complete line, whose position it then resumes from.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import msgspec
import orjson

from bp_core.errors import SinkUnavailable

log = logging.getLogger(__name__)

Position = tuple[int, int]  # (kafka offset, entry index inside the message)
_NOTHING: Position = (-1, -1)
_ENCODER = msgspec.json.Encoder()


@dataclass
class _PartitionLog:
    """The open segment of one partition and the last durable position in it."""

    directory: Path
    segment: Path | None = None
    durable_size: int = 0
    last_position: Position = _NOTHING


class ArchiveBatch:
    """The normal readings of one consumer batch, by partition, not yet written:
    ``{partition: [((offset, entry), record), ...]}`` in position order. A record is a
    dict or a ``msgspec.Struct`` that holds its own ``kafka`` position; it is encoded
    when written."""

    __slots__ = ("lines",)

    def __init__(self, lines: dict[int, list[tuple[Position, object]]] | None = None) -> None:
        self.lines: dict[int, list[tuple[Position, object]]] = lines if lines is not None else {}

    def __len__(self) -> int:
        return sum(len(lines) for lines in self.lines.values())


class ArchiveSink:
    """Appends normal readings durably, per partition, exactly once. Only one thread
    may write at a time."""

    def __init__(self, archive_dir: Path, topic: str, *, segment_bytes: int = 64 * 1024 * 1024) -> None:
        self.root = Path(archive_dir) / topic
        self.segment_bytes = segment_bytes
        self._partitions: dict[int, _PartitionLog] = {}

    # ------------------------------------------------------------------ contract

    def write(self, batch: ArchiveBatch) -> int:
        """Append the batch's lines not yet durable, fsync; returns the number written.

        Lines at or before a partition's last durable position are skipped (a replay).
        Calling ``write`` again with the same batch after a failure writes only what is
        still missing.

        Raises:
            SinkUnavailable: the folder or disk refused the write; the segment is cut
                back to its last durable size on the next attempt.
        """
        written = 0
        for partition, lines in batch.lines.items():
            state = self._partition(partition)
            fresh = [line for line in lines if line[0] > state.last_position]
            if fresh:
                written += self._write_partition(partition, state, fresh)
        return written

    def forget(self, partitions) -> None:
        """Drop cached state of partitions this consumer no longer owns.

        Their next owner re-reads the segment to find where to resume.
        """
        for partition in partitions:
            self._partitions.pop(partition, None)

    def forget_all(self) -> None:
        """Drop every cached partition state (after a partial write: re-read the files)."""
        self._partitions.clear()

    # ------------------------------------------------------------------ internals

    def _partition(self, partition: int) -> _PartitionLog:
        state = self._partitions.get(partition)
        if state is None:
            state = self._open(partition)
            self._partitions[partition] = state
        return state

    def _open(self, partition: int) -> _PartitionLog:
        """Find where a partition's archive ends.

        Raises:
            SinkUnavailable: the folder or its segments cannot be read (e.g. permissions).
        """
        directory = self.root / f"partition-{partition}"
        state = _PartitionLog(directory=directory)
        try:
            segments = sorted(directory.glob("*.jsonl")) if directory.is_dir() else []
            # The newest non-empty segment holds the last durable line.
            for segment in reversed(segments):
                size, position = _last_complete_line(segment)
                if position is not None:
                    state.segment, state.durable_size, state.last_position = segment, size, position
                    break
        except OSError as exc:
            raise SinkUnavailable(f"archive unreadable for partition {partition} in {directory}: {exc.strerror or exc}") from exc
        return state

    def _write_partition(self, partition: int, state: _PartitionLog, lines: list[tuple[Position, object]]) -> int:
        try:
            if state.segment is None or state.durable_size >= self.segment_bytes:
                state.directory.mkdir(parents=True, exist_ok=True)
                state.segment = state.directory / f"{lines[0][0][0]:020d}.jsonl"
                state.durable_size = state.segment.stat().st_size if state.segment.exists() else 0
            payload = encode_lines([record for _, record in lines])
            fd = os.open(state.segment, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                if os.fstat(fd).st_size != state.durable_size:
                    # A failed earlier attempt left bytes past the durable end.
                    os.ftruncate(fd, state.durable_size)
                view = memoryview(payload)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            if state.durable_size == 0:
                _fsync_dir(state.directory)  # a new segment's directory entry must survive too
        except OSError as exc:
            raise SinkUnavailable(f"archive write failed for partition {partition} in {state.directory}: {exc.strerror or exc}") from exc
        state.durable_size += len(payload)
        state.last_position = lines[-1][0]
        return len(lines)


def encode_lines(records: list) -> bytes:
    """Records (dicts or ``msgspec.Struct``s) as JSON Lines, one C call for all of them."""
    return _ENCODER.encode_lines(records)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _last_complete_line(segment: Path) -> tuple[int, Position | None]:
    """Repair a torn tail and return (size after repair, position of the last line).

    A line is complete when it ends with a newline and parses; anything after the last
    complete line is cut off (it was never acknowledged, so its offsets were never
    committed and will be replayed).
    """
    with open(segment, "rb+") as fh:
        data_end = fh.seek(0, os.SEEK_END)
        chunk = 1 << 16
        tail = b""
        start = data_end
        while start > 0:
            start = max(0, start - chunk)
            fh.seek(start)
            tail = fh.read(data_end - start)
            if tail.count(b"\n") >= 2 or start == 0:
                break
        # Walk back over complete lines until one parses.
        end = len(tail)
        if not tail.endswith(b"\n"):
            end = tail.rfind(b"\n") + 1  # 0 when there is no complete line at all
        while end > 0:
            line_start = tail.rfind(b"\n", 0, end - 1) + 1
            try:
                record = orjson.loads(tail[line_start:end])
                kafka = record["kafka"]
                position = (int(kafka["offset"]), int(kafka["entry"]))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                end = line_start
                continue
            size = start + end
            if size != data_end:
                log.warning("archive %s: cut a torn tail of %d bytes", segment, data_end - size)
                fh.truncate(size)
                fh.flush()
                os.fsync(fh.fileno())
            return size, position
        if start > 0:
            raise SinkUnavailable(f"archive segment {segment} has no readable line in its last {chunk} bytes")
        if data_end:
            fh.truncate(0)
        return 0, None


def read_archive(archive_dir: Path, topic: str) -> list[dict]:
    """Every archived record of a topic, in partition then position order (tests, tools)."""
    records = []
    root = Path(archive_dir) / topic
    for directory in sorted(root.glob("partition-*"), key=lambda p: int(p.name.split("-")[1])):
        for segment in sorted(directory.glob("*.jsonl")):
            with open(segment, "rb") as fh:
                records.extend(orjson.loads(line) for line in fh if line.strip())
    return records
