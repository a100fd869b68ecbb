"""The typed blood-pressure reading that every layer passes around, and the check of its time.

Both types are immutable ``msgspec.Struct`` classes rather than frozen dataclasses: the
consumer builds one per Kafka message, and a Struct is built in C (~0.07 µs against
~0.9 µs for a frozen dataclass's ``__init__``). They hold only strings, numbers and a
datetime, so they can never be part of a reference cycle: ``gc=False`` keeps them out of
the cyclic garbage collector's sight. Keyword and positional construction, equality,
``repr`` and hashing work as with a dataclass (NaN values, which only a retraction can
hold, compare unequal as NaN does).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import msgspec

from bp_core.fhir.codes import AMENDED, CORRECTED, ENTERED_IN_ERROR

# A reading dated further ahead of the moment it is consumed is refused: clocks drift and
# time zones get mislabelled by hours, not by days (issue 26, point 6).
FUTURE_TOLERANCE = timedelta(hours=24)


class Reading(msgspec.Struct, frozen=True, gc=False):
    """One blood-pressure measurement extracted from a FHIR Observation.

    ``observation_id`` is the Observation's ``id``, or, when the resource has none, a
    deterministic digest of its content (so a replay maps to the same id).
    ``patient_id`` is the id part of the subject reference (``Patient/123`` -> ``123``,
    ``urn:uuid:abc`` -> ``abc``). ``effective`` is timezone-aware: from
    ``effectiveDateTime``, ``effectiveInstant`` or ``effectivePeriod.start``.

    ``status`` is the Observation's. ``entered-in-error`` (``retracts``) withdraws the
    earlier reading with the same identity (``bp_core.fhir.ids.reading_key``); only such
    a reading may have NaN values (absent or invalid in the resource) and ``effective``
    None (absent or invalid). ``amended`` and ``corrected`` (``amends``) replace it.

    ``device_id`` and ``device_model`` come from the Observation's ``device`` reference
    (``Device/<id>`` and its ``display``). ``full_url`` is the Observation's absolute
    URL (``http(s)://<base>/Observation/<id>``) when a Bundle entry's ``fullUrl`` gives one.
    """

    observation_id: str
    patient_id: str
    effective: datetime | None
    systolic_mm_hg: float
    diastolic_mm_hg: float
    status: str = "final"
    device_id: str | None = None
    device_model: str | None = None
    full_url: str | None = None

    @property
    def retracts(self) -> bool:
        """Whether this reading withdraws the earlier one with its identity (``entered-in-error``)."""
        return self.status == ENTERED_IN_ERROR

    @property
    def amends(self) -> bool:
        """Whether this reading replaces an earlier one with its identity (``amended``, ``corrected``)."""
        return self.status == AMENDED or self.status == CORRECTED


class Rejection(msgspec.Struct, frozen=True, gc=False):
    """A resource (or whole message) that could not be used, with the reason why."""

    reason: str
    observation_id: str | None = None


def future_reason(reading: Reading, now: datetime) -> str | None:
    """The reject reason when the reading is dated more than ``FUTURE_TOLERANCE`` after
    ``now`` (the moment it is consumed), else None.

    The reason reads ``effective time in the future: <effective> is more than 24 h after
    it was consumed (<now>)``, both times in ISO 8601 as given. A reading without an
    effective time (a retraction) is never in the future.

    Raises:
        TypeError: ``now`` is naive.
    """
    effective = reading.effective
    if effective is None or effective - now <= FUTURE_TOLERANCE:
        return None
    return (f"effective time in the future: {effective.isoformat()} is more than "
            f"{_duration(FUTURE_TOLERANCE)} after it was consumed ({now.isoformat()})")


def _duration(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:g} h"
