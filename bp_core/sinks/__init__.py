"""Sinks: where routed readings become durable.

Every sink has the same small contract (after quix-streams): ``add(...)`` only buffers;
``flush()`` writes the buffered batch durably or raises, and always leaves the sink
ready for the next attempt. The consumer flushes every sink, then commits offsets.

- ``elasticsearch``  anomalies, one document per Observation (``_id`` = observation id)
- ``archive``        normal readings as JSON Lines, per partition, replay-safe
- ``dlq``            rejected messages to ``<topic>.dlq`` with the reason in headers
"""
