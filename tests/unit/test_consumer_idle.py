"""When ``--exit-when-idle`` lets the consumer exit: after that long with nothing read and
nothing left to write, counted from the last batch made durable or given up, or the
last partition assignment.

CI once caught the consumer exiting with half a topic unread: Elasticsearch had been
down for 16 s, so the batch in flight was written 16 s after it was read; the first poll
after the write returned nothing (the fetch of what waited was still on its way), and
the idle clock, counted from the last read, said 16 s > 6 s. Nothing was lost (what was
not read was not committed) but a back-fill stopped half-way with exit code 0.
"""

from __future__ import annotations

import time
from concurrent.futures import Future

from kafka import TopicPartition

from bp_core.consumer.service import ConsumerOptions, ConsumerService, PreparedBatch
from bp_core.settings import Settings
from bp_core.sinks.archive import ArchiveSink

P0 = TopicPartition("bp", 0)
IDLE = 6.0


class StandInConsumer:
    """The consumer calls that completing and dropping a batch make."""

    def __init__(self):
        self.seeks: list[tuple] = []

    def assignment(self):
        return {P0}

    def commit_async(self, offsets, callback):
        pass

    def highwater(self, tp):
        return 1000

    def seek(self, tp, offset):
        self.seeks.append((tp, offset))


def idle_service(tmp_path) -> ConsumerService:
    settings = Settings.from_env().with_(archive_dir=tmp_path)
    service = ConsumerService(settings, ConsumerOptions(exit_when_idle=IDLE))
    service._consumer = StandInConsumer()
    service._archive = ArchiveSink(settings.archive_dir, settings.topic)
    return service


def written_batch() -> PreparedBatch:
    batch = PreparedBatch(offsets={P0: 500}, first_offsets={P0: 0}, es=None, archive=None, dlq=None, messages=500)
    batch.future = Future()
    batch.future.set_result(None)
    return batch


def test_never_idle_before_the_first_assignment(tmp_path):
    service = idle_service(tmp_path)
    assert not service._idle_exit_due(time.monotonic() + 3600)


def test_idle_after_the_given_time_without_a_batch(tmp_path):
    service = idle_service(tmp_path)
    service._on_assigned([P0])
    assigned = service._idle_from
    assert not service._idle_exit_due(assigned + IDLE - 0.1)
    assert service._idle_exit_due(assigned + IDLE)


def test_a_long_write_restarts_the_idle_clock(tmp_path):
    service = idle_service(tmp_path)
    service._on_assigned([P0])
    service._idle_from -= 16.0  # the batch was read 16 s ago; Elasticsearch was down since
    batch = written_batch()
    service._inflight = batch
    assert not service._idle_exit_due(time.monotonic()), "never idle with a batch in flight"
    assert service._complete(batch)
    service._inflight = None
    now = time.monotonic()
    assert not service._idle_exit_due(now), "the first empty poll after a long write is not idleness"
    assert service._idle_exit_due(now + IDLE)


def test_a_batch_given_up_restarts_the_idle_clock(tmp_path):
    service = idle_service(tmp_path)
    service._on_assigned([P0])
    service._idle_from -= 60.0
    service._drop(written_batch())
    assert service._consumer.seeks == [(P0, 0)]
    assert not service._idle_exit_due(time.monotonic()), "what was given up is read again first"
