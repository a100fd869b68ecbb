"""The product's exceptions, one tree::

    BPError
    ├── UsageError               a bad command-line argument or setting
    ├── InvalidObservation       a message that is not a usable FHIR BP Observation
    ├── ModelUnavailable         no model can be served (none promoted, store unreachable)
    ├── CannotCompare            drift cannot be checked (no champion, no readings, no reference data)
    └── SinkError                a sink could not make a batch durable
        └── SinkUnavailable      ...for a reason that may pass (server down, disk full)

Lower-level errors are converted at the boundary (``raise X(...) from exc``); the
message of an ``InvalidObservation`` is what the dead-letter header carries.
"""

from __future__ import annotations


class BPError(Exception):
    """Base of every error bp-monitor raises on purpose."""


class UsageError(BPError):
    """A command-line argument or setting is invalid; the message says which and why."""


class InvalidObservation(BPError):
    """A message or resource is not a usable FHIR blood-pressure Observation."""

    def __init__(self, reason: str, observation_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.observation_id = observation_id


class ModelUnavailable(BPError):
    """No model can be served: none promoted yet, or the model store is unreachable."""


class CannotCompare(BPError):
    """A drift check has nothing to compare: no champion, no live readings, or no reference data."""


class SinkError(BPError):
    """A sink could not make a batch durable; offsets covering it must not be committed."""


class SinkUnavailable(SinkError):
    """A sink failed for a reason that may pass (server down, disk full): retry later."""
