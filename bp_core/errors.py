"""The product's exceptions, one tree::

    BPError
    ├── UsageError               a bad command-line argument or setting
    ├── InvalidObservation       a message that is not a usable FHIR BP Observation
    ├── ModelUnavailable         no model can be served (none promoted, store unreachable)
    ├── BrokerUnavailable        Kafka could not be reached, or stopped answering
    │   └── TopicMissing         a topic to read does not exist
    ├── ReplayFailed             a dead-letter replay was not acknowledged
    ├── StateFormatError         a stored patient state this version cannot read
    ├── PromotionError           the gate could not decide or apply a decision; nothing moved
    │   ├── ChampionMoved        'champion' moved after this promote/rollback read it
    │   ├── PromotionInProgress  another promote/rollback holds the registry lock
    │   ├── ChampionUnloadable   the serving champion cannot be loaded to compare against
    │   └── EvaluationFailed     the hold-out or the challenger's scores could not be made
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


class BrokerUnavailable(BPError):
    """Kafka could not be reached, or stopped answering while we were using it."""


class TopicMissing(BrokerUnavailable):
    """A topic to read does not exist (for the DLQ: nothing was ever rejected)."""


class ReplayFailed(BPError):
    """Kafka did not acknowledge a dead-letter replay's sends or commits; what was
    acknowledged and committed stays replayed, and a new replay goes on from there."""


class StateFormatError(BPError):
    """A changelog value is not a patient state this version can read (other format
    version, truncated or inconsistent)."""


class PromotionError(BPError):
    """The promotion gate could not decide or apply a decision; the registry is as it was."""


class ChampionMoved(PromotionError):
    """'champion' moved after this promote or rollback read it: run it again."""


class PromotionInProgress(PromotionError):
    """Another promote or rollback holds the registry lock."""


class ChampionUnloadable(PromotionError):
    """The version 'champion' points at cannot be loaded, so nothing can be compared with it."""


class EvaluationFailed(PromotionError):
    """The hold-out could not be simulated, or the challenger could not be scored on it."""


class CannotCompare(BPError):
    """A drift check has nothing to compare: no champion, no live readings, or no reference data."""


class SinkError(BPError):
    """A sink could not make a batch durable; offsets covering it must not be committed."""


class SinkUnavailable(SinkError):
    """A sink failed for a reason that may pass (server down, disk full): retry later."""
