"""Offset-commit bookkeeping of the consumer service: what is sent again after a failed commit.

The commit itself is exercised against a real broker in the integration and fault
suites (``test_second_member_joins_and_leaves_mid_stream`` makes commits fail during
rebalances). Here only the decision is checked — which offsets go out again, when, and
for which partitions — with a recording stand-in for the two consumer calls it uses.
"""

from __future__ import annotations

from kafka import OffsetAndMetadata, TopicPartition
from kafka.errors import RebalanceInProgressError

from bp_core.consumer.service import ConsumerService
from bp_core.settings import Settings
from bp_core.sinks.archive import ArchiveSink

P0, P1, P2 = (TopicPartition("bp", p) for p in range(3))


class RecordingConsumer:
    """``assignment`` and ``commit_async``, the calls ``ConsumerService._commit`` makes."""

    def __init__(self, owned):
        self.owned = set(owned)
        self.sent: list[tuple[dict, object]] = []

    def assignment(self):
        return set(self.owned)

    def commit_async(self, offsets, callback):
        self.sent.append(({tp: om.offset for tp, om in offsets.items()}, callback))


def service_with(consumer: RecordingConsumer, archive_dir) -> ConsumerService:
    settings = Settings.from_env().with_(archive_dir=archive_dir)
    service = ConsumerService(settings)
    service._consumer = consumer
    service._archive = ArchiveSink(settings.archive_dir, settings.topic)  # revocation forgets its positions
    return service


def answer(consumer: RecordingConsumer, index: int, response=None) -> None:
    """The coordinator's answer to the ``index``-th commit: success, or ``response`` (an error)."""
    offsets, callback = consumer.sent[index]
    callback({tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()}, response)


def test_a_failed_commit_is_sent_again_for_what_the_coordinator_lacks(tmp_path):
    consumer = RecordingConsumer([P0, P1, P2])
    service = service_with(consumer, tmp_path)
    service._commit({P0: 100, P1: 200})
    answer(consumer, 0)                      # acknowledged
    service._commit({P1: 250, P2: 300})
    answer(consumer, 1, RebalanceInProgressError())
    due = service._recommit_at
    assert due is not None

    service._maybe_recommit(due - 0.1)       # not yet
    assert len(consumer.sent) == 2
    service._maybe_recommit(due)
    assert consumer.sent[2][0] == {P1: 250, P2: 300}   # P0 is already held by the coordinator
    answer(consumer, 2)
    service._maybe_recommit(due + 10)
    assert len(consumer.sent) == 3           # nothing more to send
    assert service._committed == {P0: 100, P1: 250, P2: 300}


def test_no_resend_while_a_commit_is_in_flight(tmp_path):
    consumer = RecordingConsumer([P0])
    service = service_with(consumer, tmp_path)
    service._commit({P0: 10})
    service._commit({P0: 20})
    answer(consumer, 0, RebalanceInProgressError())
    service._maybe_recommit(service._recommit_at + 1)
    assert len(consumer.sent) == 2           # the second commit may still succeed
    answer(consumer, 1)
    service._maybe_recommit(float("inf"))
    assert len(consumer.sent) == 2           # it did: it covers the failed one


def test_offsets_of_partitions_given_to_another_member_are_never_sent_again(tmp_path):
    consumer = RecordingConsumer([P0, P1])
    service = service_with(consumer, tmp_path)
    service._commit({P0: 10, P1: 20})
    answer(consumer, 0, RebalanceInProgressError())
    # The rebalance hands P1 to another member; that member may commit past 20, and
    # sending 20 again would move its offset back.
    service._on_revoked([P0, P1])
    consumer.owned = {P0}
    service._on_assigned([P0])
    service._commit({P0: 15})                # a batch completed after the assignment
    answer(consumer, 1, RebalanceInProgressError())
    service._maybe_recommit(float("inf"))
    assert consumer.sent[-1][0] == {P0: 15}


def test_a_batch_completed_mid_rebalance_is_forgotten_if_its_partition_goes(tmp_path):
    consumer = RecordingConsumer([P0, P1])
    service = service_with(consumer, tmp_path)
    service._on_revoked([P0, P1])            # revocation: the assignment is still the old one ...
    service._commit({P1: 40})                # ... when the batch in flight completes
    answer(consumer, 0, RebalanceInProgressError())
    consumer.owned = {P0}
    service._on_assigned([P0])               # P1 went to another member
    service._maybe_recommit(float("inf"))
    assert len(consumer.sent) == 1
