"""The typed blood-pressure reading that every layer passes around."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Reading:
    """One blood-pressure measurement extracted from a FHIR Observation.

    ``observation_id`` is the Observation's ``id``, or, when the resource has none, a
    deterministic digest of its content (so a replay maps to the same id).
    ``patient_id`` is the id part of the subject reference (``Patient/123`` -> ``123``,
    ``urn:uuid:abc`` -> ``abc``). ``effective`` is timezone-aware: from
    ``effectiveDateTime``, ``effectiveInstant`` or ``effectivePeriod.start``.
    """

    observation_id: str
    patient_id: str
    effective: datetime
    systolic_mm_hg: float
    diastolic_mm_hg: float
    status: str = "final"


@dataclass(frozen=True, slots=True)
class Rejection:
    """A resource (or whole message) that could not be used, with the reason why."""

    reason: str
    observation_id: str | None = None
