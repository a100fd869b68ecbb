"""Idempotent creation of what the system needs outside itself: topics and the index template.

Topics (``settings``' names), key = patient id wherever a patient is concerned:

- the Observation topic (``--partitions``) and its DLQ (1 partition);
- the alerts topic, with the Observation topic's partition count;
- the patients topic, compacted (the latest Patient per id is kept for good), with the
  Observation topic's partition count too, so a patient's records share a partition number.
"""

from __future__ import annotations

from bp_core.errors import BPError
from bp_core.settings import Settings

COMPACTED = {"cleanup.policy": "compact"}


def _admin(settings: Settings):
    from bp_core.clients import kafka_admin

    return kafka_admin(settings, "bp-setup", request_timeout_ms=30_000)


def ensure_topics(settings: Settings, *, partitions: int = 3) -> list[str]:
    """Create the topics above when missing; make an existing patients topic compacted.

    The alerts and patients topics take the Observation topic's partition count as it is
    (``partitions`` when this call creates it).

    Returns:
        One human-readable line per topic saying what was done.
    Raises:
        BPError: Kafka is unreachable or refuses a change.
    """
    from kafka.errors import KafkaError

    admin = _admin(settings)
    lines = []
    try:
        line, created = _ensure(admin, settings.topic, partitions)
        lines.append(line)
        # Just created: its metadata may lag, and its count is known.
        source_partitions = partitions if created else _partition_count(admin, settings.topic)
        lines.append(_ensure(admin, settings.dlq_topic, 1)[0])
        lines.append(_ensure(admin, settings.alerts_topic, source_partitions)[0])
        lines.append(_ensure(admin, settings.patients_topic, source_partitions, COMPACTED)[0])
    except KafkaError as exc:
        raise BPError(f"Kafka at {settings.kafka_bootstrap} refused a topic change: {exc}") from exc
    finally:
        admin.close()
    return lines


def ensure_topic(settings: Settings, name: str, *, partitions: int, config: dict[str, str] | None = None) -> str:
    """Create topic ``name`` when missing (or bring its ``config`` in line); a line saying which.

    Raises:
        BPError: Kafka is unreachable or refuses the change.
    """
    from kafka.errors import KafkaError

    admin = _admin(settings)
    try:
        line, _ = _ensure(admin, name, partitions, config)
        return line
    except KafkaError as exc:
        raise BPError(f"Kafka at {settings.kafka_bootstrap} refused a topic change: {exc}") from exc
    finally:
        admin.close()


def partition_count(settings: Settings, topic: str) -> int:
    """How many partitions ``topic`` has.

    Raises:
        BPError: Kafka is unreachable, or the topic does not exist.
    """
    from kafka.errors import KafkaError

    admin = _admin(settings)
    try:
        return _partition_count(admin, topic)
    except KafkaError as exc:
        raise BPError(f"cannot read the partitions of topic {topic} from Kafka at {settings.kafka_bootstrap}: "
                      f"{exc}") from exc
    finally:
        admin.close()


def ensure_patients_topic(settings: Settings) -> str:
    """``ensure_topics``' work for the patients topic alone (what ``bp produce`` needs).

    A broker that creates topics on first use would otherwise make it an ordinary,
    uncompacted topic.

    Raises:
        BPError: Kafka is unreachable or refuses the change.
    """
    from kafka.errors import KafkaError

    admin = _admin(settings)
    try:
        existing = set(admin.list_topics())
        partitions = _partition_count(admin, settings.topic) if settings.topic in existing else 3
        return _ensure(admin, settings.patients_topic, partitions, COMPACTED, existing=existing)[0]
    except KafkaError as exc:
        raise BPError(f"Kafka at {settings.kafka_bootstrap} refused a topic change: {exc}") from exc
    finally:
        admin.close()


def _partition_count(admin, topic: str) -> int:
    (description,) = admin.describe_topics([topic])
    if description["error_code"] or not description["partitions"]:
        raise BPError(f"cannot read the partitions of topic {topic} (error code {description['error_code']})")
    return len(description["partitions"])


def _ensure(admin, name: str, partitions: int, configs: dict | None = None, *,
            existing: set[str] | None = None) -> tuple[str, bool]:
    """Create ``name`` or bring its ``configs`` in line: (a line saying which, created?)."""
    from kafka.admin import ConfigResource, ConfigResourceType
    from kafka.errors import TopicAlreadyExistsError

    configs = configs or {}
    if name not in (set(admin.list_topics()) if existing is None else existing):
        try:
            admin.create_topics({name: {"num_partitions": partitions, "replication_factor": 1, "configs": configs}})
            extra = ", " + ", ".join(f"{k}={v}" for k, v in configs.items()) if configs else ""
            return f"topic {name}: created ({partitions} partitions{extra})", True
        except TopicAlreadyExistsError:
            pass  # created meanwhile by someone else: check its configs below
    if not configs:
        return f"topic {name}: exists", False
    resource = ConfigResource(ConfigResourceType.TOPIC, name, dict.fromkeys(configs))
    current = admin.describe_configs([resource], config_filter="all")["topic"][name]
    wrong = {key: value for key, value in configs.items() if current.get(key, {}).get("value") != value}
    if not wrong:
        return f"topic {name}: exists", False
    admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name, wrong)])
    return f"topic {name}: exists, set " + ", ".join(f"{k}={v}" for k, v in wrong.items()), False


def ensure_elasticsearch(settings: Settings) -> list[str]:
    """Create or update the index template and the index.

    Raises:
        BPError: Elasticsearch is unreachable.
    """
    from bp_core.clients import elasticsearch
    from bp_core.sinks.es_template import ensure_index_template

    es = elasticsearch(settings)
    try:
        ensure_index_template(es, settings.es_index)
    except Exception as exc:
        raise BPError(f"cannot set up Elasticsearch at {settings.es_url}: {type(exc).__name__}: {exc}") from exc
    finally:
        es.close()
    return [f"index template {settings.es_index}: up to date", f"index {settings.es_index}: ready"]
