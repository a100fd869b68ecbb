"""A consumer poll that does not wait on kafka-python's network thread for nothing.

Every ``KafkaConsumer.poll`` begins with ``coordinator.poll()``, whose first step,
``ensure_coordinator_ready()``, runs a coroutine on the network thread and blocks until
it answers, even when the group coordinator is known and connected and the coroutine
returns at once. In ``bp consume`` that hand-off costs the consumer thread about 3 ms per
call: the network thread, then the consumer thread, each wait for the GIL while the
writer threads work. About 50 calls per 100,000 messages put 0.15-0.18 s of waiting on
the pipeline's critical path, a tenth of it (measured by timing each step of the poll).

``check_coordinator_in_place(consumer)`` makes that step answer True at once when the
coordinator is known and its connection is up, which is exactly when the coroutine would
find nothing to do; otherwise kafka-python looks for the coordinator as before, on its
network thread. The check only reads (the coordinator's node id, whether its connection
is up): finding the coordinator, marking it dead and everything else stay where
kafka-python puts them.

It replaces a method of one consumer's coordinator (not of the class), through private
attributes, which is why kafka-python is pinned (3.0.12); when they are missing the
consumer is left as it is. tests/unit/test_coordinator_check.py covers the decision,
tests/integration/test_coordinator_check_broker.py a consumer against the real broker.
"""

from __future__ import annotations

import logging

log = logging.getLogger("bp_core.consumer")


def check_coordinator_in_place(consumer) -> bool:
    """Make ``consumer``'s polls skip the network-thread round trip while its group
    coordinator is known and connected. False (and a debug line) when this kafka-python
    has not the attributes it relies on: the consumer then works as it always did."""
    coordinator = getattr(consumer, "_coordinator", None)
    ensure = getattr(coordinator, "ensure_coordinator_ready", None)
    client = getattr(coordinator, "_client", None)
    if ensure is None or not hasattr(coordinator, "coordinator_id") or not callable(getattr(client, "connected", None)):
        log.debug("group coordinator checked on kafka-python's network thread: this kafka-python has no hook for it")
        return False

    def ensure_coordinator_ready(timeout_ms=None):
        node = coordinator.coordinator_id
        if node is not None and client.connected(node):
            return True
        return ensure(timeout_ms)

    coordinator.ensure_coordinator_ready = ensure_coordinator_ready
    return True
