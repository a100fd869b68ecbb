"""Identities of readings and of published resources: readable, deterministic, never shared."""

from __future__ import annotations

import hashlib
import itertools
from datetime import datetime, timezone

import orjson
import pytest
from hypothesis import given, settings, strategies as st

from bp_core.fhir.ids import MAX_KEY_BYTES, device_id, digest_id, is_fhir_id, reading_key
from bp_core.fhir.parse import parse_payload
from bp_core.reading import Reading
from tests.unit.test_fhir_parse import observation

EFFECTIVE = datetime(2026, 3, 1, 8, 30, tzinfo=timezone.utc)


def reading(patient_id: str = "p-1", observation_id: str = "o-1", full_url: str | None = None, **changes) -> Reading:
    return Reading(observation_id, patient_id, EFFECTIVE, 150.0, 95.0, full_url=full_url, **changes)


def test_the_usual_key_is_readable():
    assert reading_key(reading("pat-00042", "5c1f8a0e-0000-4000-8000-000000000001")) == \
        "Patient/pat-00042/Observation/5c1f8a0e-0000-4000-8000-000000000001"


def test_a_full_url_names_the_observation():
    key = reading_key(reading("p-100", "bp-s1", full_url="http://example.org/fhir/Observation/bp-s1"))
    assert key == "Patient/p-100/http://example.org/fhir/Observation/bp-s1"


def test_two_patients_with_the_same_observation_id_never_share_a_key():
    assert reading_key(reading("p-1", "obs-1")) != reading_key(reading("p-2", "obs-1"))
    url = "https://fhir.example.org/Observation/obs-1"
    assert reading_key(reading("p-1", "obs-1", url)) != reading_key(reading("p-2", "obs-1", url))


def test_the_same_observation_from_two_servers_has_two_keys():
    first = reading("p-1", "obs-1", "https://a.example.org/fhir/Observation/obs-1")
    second = reading("p-1", "obs-1", "https://b.example.org/fhir/Observation/obs-1")
    assert reading_key(first) != reading_key(second)


def test_a_correction_has_the_key_of_the_reading_it_corrects():
    original, retraction, amendment = (
        parse_payload(orjson.dumps(observation(status=status, **changes)))[0]
        for status, changes in (("final", {}), ("entered-in-error", {"component": []}), ("amended", {})))
    assert retraction.retracts and amendment.amends
    assert reading_key(original) == reading_key(retraction) == reading_key(amendment) == "Patient/p1/Observation/obs-1"


def test_status_values_and_device_are_not_part_of_the_key():
    assert reading_key(reading()) == reading_key(reading(status="corrected", device_id="cuff-1", device_model="x"))


def test_slashes_and_percents_in_ids_cannot_forge_another_key():
    forgeries = [("a/Observation/b", "c"), ("a", "b/Observation/c"), ("a%2FObservation%2Fb", "c")]
    keys = [reading_key(reading(patient_id, observation_id)) for patient_id, observation_id in forgeries]
    assert keys == ["Patient/a%2FObservation%2Fb/Observation/c", "Patient/a/Observation/b%2FObservation%2Fc",
                    "Patient/a%252FObservation%252Fb/Observation/c"]


def test_a_long_key_becomes_a_digest_of_its_readable_form():
    long_id = "x" * 300
    readable = f"Patient/p-1/Observation/{long_id}"
    key = reading_key(reading("p-1", long_id))
    assert key == "sha256-" + hashlib.sha256(readable.encode()).hexdigest()
    assert len(key.encode()) <= MAX_KEY_BYTES


def test_the_length_limit_counts_utf8_bytes():
    fits = "é" * ((MAX_KEY_BYTES - len("Patient/p/Observation/")) // 2)       # 2 bytes each
    assert reading_key(reading("p", fits)) == f"Patient/p/Observation/{fits}"
    too_long = "🩺" * 60                                                       # 240 bytes
    assert reading_key(reading("p", too_long)).startswith("sha256-")


keys_parts = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=90)
urls = st.one_of(st.none(), st.builds(lambda base, oid: f"https://{base}.example.org/Observation/{oid}",
                                      st.from_regex(r"[a-z]{1,8}", fullmatch=True),
                                      st.from_regex(r"[A-Za-z0-9\-.]{1,64}", fullmatch=True)))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(keys_parts, keys_parts, urls), min_size=2, max_size=6, unique=True))
def test_distinct_readings_have_distinct_keys_within_the_size_limit(identities):
    keys = [reading_key(reading(p, o, u)) for p, o, u in identities]
    assert len(set(keys)) == len(identities)
    assert all(0 < len(key.encode()) <= MAX_KEY_BYTES for key in keys)
    assert keys == [reading_key(reading(p, o, u)) for p, o, u in identities]  # deterministic


def test_digest_ids_are_fhir_ids_and_keep_their_parts_apart():
    ids = [digest_id("ra", a, b) for a, b in [("ab", "c"), ("a", "bc"), ("a", "b"), ("", "ab")]]
    assert len(set(ids)) == 4
    assert all(is_fhir_id(i) and i.startswith("ra-") and len(i) == 43 for i in ids)
    assert digest_id("ra", "x", "y") == digest_id("ra", "x", "y")


@pytest.mark.parametrize("name, version, expected", [
    ("bp-anomaly-classifier", "7", "bp-anomaly-classifier.7"),
    ("bp-monitor-rules", "r-a382783b1786", "bp-monitor-rules.r-a382783b1786"),
    ("bp-anomaly-classifier", "1.2.3", "bp-anomaly-classifier.1.2.3"),
])
def test_plain_device_ids_are_readable(name, version, expected):
    assert device_id(name, version) == expected


def test_other_device_ids_are_digests_and_never_collide():
    pairs = [("file:model.joblib", "3f9a0c1b"), ("a.b", "c"), ("a", "b.c"), ("a", "b c"), ("x" * 60, "12345"),
             ("bp-anomaly-classifier", "7"), ("bp-anomaly-classifier", "8")]
    ids = [device_id(name, version) for name, version in pairs]
    assert len(set(ids)) == len(pairs)
    assert all(is_fhir_id(i) for i in ids)
    assert device_id("file:model.joblib", "3f9a0c1b").startswith("device-")


@pytest.mark.parametrize("text, valid", [
    ("obs-1", True), ("A.b-9", True), ("x" * 64, True), ("x" * 65, False), ("", False), ("a/b", False),
    ("a b", False), ("sha1-" + "0" * 40, True), ("é", False), ("a_b", False),
])
def test_is_fhir_id(text, valid):
    assert is_fhir_id(text) is valid


def test_keys_of_many_simulated_readings_are_unique():
    pairs = list(itertools.product([f"pat-{i}" for i in range(50)], [f"obs-{i}" for i in range(50)]))
    assert len({reading_key(reading(p, o)) for p, o in pairs}) == len(pairs)
