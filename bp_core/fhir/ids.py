"""Identities: of a reading, and of the FHIR resources bp-monitor publishes. Pure and deterministic.

``reading_key(reading)`` is the one identity of a reading: its Elasticsearch ``_id``, the
base of its alerts' ids, and what a correction (``entered-in-error``, ``amended``,
``corrected``) is matched by. It always holds the patient, so two patients' readings never
share a key, whatever their Observation ids::

    Patient/<patient id>/Observation/<observation id>     the usual form
    Patient/<patient id>/<full URL>                       when the Observation came with an
                                                          absolute URL (a Bundle entry's fullUrl)
    sha256-<64 hex>                                       the digest of either form, when it
                                                          exceeds MAX_KEY_BYTES

``/`` and ``%`` inside the patient and Observation ids are percent-encoded, so the key
can be split back into its parts and distinct readings never share one. A correction finds
its reading when it names it the same way (same subject and id, or the same full URL).

The FHIR ids of the published resources (``[A-Za-z0-9-.]{1,64}``) are digests of the
same parts: ``digest_id``.
"""

from __future__ import annotations

import hashlib
import re

from bp_core.reading import Reading

__all__ = ["MAX_KEY_BYTES", "reading_key", "digest_id", "device_id", "is_fhir_id"]

MAX_KEY_BYTES = 256  # Elasticsearch refuses ids over 512 bytes; a readable key stays at or below 256
_DIGEST_HEX = 40     # 160 bits: collisions are out of reach, and "<prefix>-<hex>" stays within 64 characters

_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_NAME = re.compile(r"[A-Za-z0-9\-]+")


def reading_key(reading: Reading) -> str:
    """The reading's key (see the module docstring): at most ``MAX_KEY_BYTES`` UTF-8 bytes."""
    patient_id = reading.patient_id
    if "/" in patient_id or "%" in patient_id:
        patient_id = _escape(patient_id)
    url = reading.full_url
    if url is None:
        observation_id = reading.observation_id
        if "/" in observation_id or "%" in observation_id:
            observation_id = _escape(observation_id)
        key = f"Patient/{patient_id}/Observation/{observation_id}"
    else:
        key = f"Patient/{patient_id}/{url}"
    # A character is at most 4 UTF-8 bytes: short keys need no encoding to be measured.
    if len(key) <= MAX_KEY_BYTES // 4 or len(encoded := key.encode()) <= MAX_KEY_BYTES:
        return key
    return "sha256-" + hashlib.sha256(encoded).hexdigest()


def _escape(text: str) -> str:
    return text.replace("%", "%25").replace("/", "%2F")


def digest_id(prefix: str, *parts: str) -> str:
    """A FHIR id ``<prefix>-<40 hex>``: the SHA-256 of the parts, each length-prefixed (so
    distinct tuples of parts never give the same input)."""
    text = "".join(f"{len(part)}:{part}" for part in parts)
    return f"{prefix}-{hashlib.sha256(text.encode()).hexdigest()[:_DIGEST_HEX]}"


def device_id(name: str, version: str) -> str:
    """The id of the Device standing for a model version (or a rule set): ``<name>.<version>``
    when both are plain (name of letters, digits and ``-``; a version may also hold ``.``)
    and it fits a FHIR id, else ``device-<40 hex>``. Distinct pairs give distinct ids:
    the name holds no ``.``, and a digest form holds none at all."""
    readable = f"{name}.{version}"
    if _NAME.fullmatch(name) and _FHIR_ID.fullmatch(readable):
        return readable
    return digest_id("device", name, version)


def is_fhir_id(text: str) -> bool:
    """Whether ``text`` is a valid FHIR ``id`` (``[A-Za-z0-9-.]{1,64}``), fit for a literal reference."""
    return _FHIR_ID.fullmatch(text) is not None
