"""``check_coordinator_in_place``: a poll answers "coordinator ready" itself only when the
coordinator is known and connected, and asks kafka-python's network thread otherwise."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from bp_core.consumer.coordinator_check import check_coordinator_in_place


class StandInCoordinator:
    """The attributes the check reads, and a record of the round trips it leaves to kafka-python."""

    def __init__(self, node=None, connected=()):
        self.coordinator_id = node
        self._client = SimpleNamespace(connected=lambda node: node in connected)
        self.round_trips: list = []

    def ensure_coordinator_ready(self, timeout_ms=None):
        self.round_trips.append(timeout_ms)
        return False  # as when the coordinator is not found in time


def consumer_with(coordinator):
    assert check_coordinator_in_place(SimpleNamespace(_coordinator=coordinator))
    return coordinator


def test_a_known_connected_coordinator_answers_without_a_round_trip():
    coordinator = consumer_with(StandInCoordinator(node=1, connected={1}))
    assert coordinator.ensure_coordinator_ready(timeout_ms=500) is True
    assert coordinator.round_trips == []


def test_an_unknown_coordinator_is_looked_for_by_kafka_python():
    coordinator = consumer_with(StandInCoordinator(node=None, connected={1}))
    assert coordinator.ensure_coordinator_ready(timeout_ms=500) is False
    assert coordinator.round_trips == [500]


def test_a_known_coordinator_whose_connection_is_down_is_left_to_kafka_python():
    coordinator = consumer_with(StandInCoordinator(node=1, connected=()))
    assert coordinator.ensure_coordinator_ready(timeout_ms=None) is False
    assert coordinator.round_trips == [None]


def test_the_check_follows_the_coordinator_as_it_changes():
    coordinator = consumer_with(StandInCoordinator(node=1, connected={2}))
    coordinator.ensure_coordinator_ready(1)
    coordinator.coordinator_id = 2  # found another one
    assert coordinator.ensure_coordinator_ready(2) is True
    assert coordinator.round_trips == [1]


def test_a_consumer_without_the_hooks_is_left_as_it_is(caplog):
    caplog.set_level(logging.DEBUG, logger="bp_core.consumer")
    bare = SimpleNamespace(ensure_coordinator_ready=lambda timeout_ms=None: "untouched")
    assert check_coordinator_in_place(SimpleNamespace(_coordinator=bare)) is False
    assert check_coordinator_in_place(SimpleNamespace()) is False
    assert bare.ensure_coordinator_ready() == "untouched"
    assert "no hook" in caplog.text
