"""``bp setup`` against the real broker: the alerts topic and the compacted patients topic,
with the readings topic's partition count, created once and left alone after."""

import subprocess

import pytest
from kafka.admin import ConfigResource, ConfigResourceType

from bp_core.provisioning import ensure_patients_topic
from tests.integration.helpers import BP, bp_env
from tests.stack_fixtures import unique


@pytest.fixture
def extra_topics(kafka_admin, topic):
    names = {"alerts": f"{topic}.alerts", "patients": f"{topic}.patients"}
    yield names
    try:
        kafka_admin.delete_topics([name for name in names.values() if name in set(kafka_admin.list_topics())])
    except Exception:  # best effort: a leftover test topic is harmless
        pass


def _cleanup_policy(admin, name: str) -> str:
    configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name, {"cleanup.policy": None})],
                                   config_filter="all")
    return configs["topic"][name]["cleanup.policy"]["value"]


def _partitions(admin, name: str) -> int:
    (description,) = admin.describe_topics([name])
    return len(description["partitions"])


def test_setup_creates_alerts_and_compacted_patients_topics(settings, kafka_admin, extra_topics, es):
    env = {**bp_env(settings), "BP_ALERTS_TOPIC": extra_topics["alerts"], "BP_PATIENTS_TOPIC": extra_topics["patients"]}
    # The readings topic exists with 3 partitions: --partitions only applies to a new one.
    first = subprocess.run([BP, "setup", "--partitions", "5"], env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert f"topic {extra_topics['alerts']}: created (3 partitions)" in first.stdout
    assert f"topic {extra_topics['patients']}: created (3 partitions, cleanup.policy=compact)" in first.stdout
    assert _partitions(kafka_admin, extra_topics["alerts"]) == _partitions(kafka_admin, extra_topics["patients"]) == 3
    assert _cleanup_policy(kafka_admin, extra_topics["patients"]) == "compact"
    assert _cleanup_policy(kafka_admin, extra_topics["alerts"]) == "delete"

    again = subprocess.run([BP, "setup"], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert f"topic {extra_topics['patients']}: exists\n" in again.stdout, "idempotent"


def test_an_uncompacted_patients_topic_is_made_compacted(settings, kafka_admin):
    name = unique("bp-test-patients")
    kafka_admin.create_topics({name: {"num_partitions": 3, "replication_factor": 1}}, wait_for_metadata=True)
    try:
        assert _cleanup_policy(kafka_admin, name) == "delete"
        line = ensure_patients_topic(settings.with_(patients_topic=name))
        assert line == f"topic {name}: exists, set cleanup.policy=compact"
        assert _cleanup_policy(kafka_admin, name) == "compact"
        assert ensure_patients_topic(settings.with_(patients_topic=name)) == f"topic {name}: exists"
    finally:
        kafka_admin.delete_topics([name])
