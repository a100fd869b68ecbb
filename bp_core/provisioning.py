"""Idempotent creation of what the system needs outside itself: topics and the index template."""

from __future__ import annotations

from bp_core.errors import BPError
from bp_core.settings import Settings


def ensure_topics(settings: Settings, *, partitions: int = 3) -> list[str]:
    """Create ``settings.topic`` (``partitions``) and its DLQ (1 partition) when missing.

    Returns:
        One human-readable line per topic saying what was done.
    Raises:
        BPError: Kafka is unreachable.
    """
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    from bp_core.clients import kafka_admin

    admin = kafka_admin(settings, "bp-setup", request_timeout_ms=30_000)
    lines = []
    try:
        existing = set(admin.list_topics())
        for name, count in ((settings.topic, partitions), (settings.dlq_topic, 1)):
            if name in existing:
                lines.append(f"topic {name}: exists")
                continue
            try:
                admin.create_topics([NewTopic(name=name, num_partitions=count, replication_factor=1)])
                lines.append(f"topic {name}: created ({count} partitions)")
            except TopicAlreadyExistsError:
                lines.append(f"topic {name}: exists")
    finally:
        admin.close()
    return lines


def ensure_topic(settings: Settings, name: str, *, partitions: int, config: dict[str, str] | None = None) -> bool:
    """Create topic ``name`` when missing; True if it was created.

    Raises:
        BrokerUnavailable: Kafka is unreachable.
    """
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    from bp_core.clients import kafka_admin

    admin = kafka_admin(settings, "bp-setup", request_timeout_ms=30_000)
    try:
        if name in set(admin.list_topics()):
            return False
        admin.create_topics([NewTopic(name=name, num_partitions=partitions, replication_factor=1,
                                      topic_configs=config or {})])
        return True
    except TopicAlreadyExistsError:
        return False
    finally:
        admin.close()


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
