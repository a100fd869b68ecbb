"""The one place Kafka and Elasticsearch clients are built from ``Settings``.

Every command, the consumer and the tools call these, so addresses, credentials and
the conversion of "cannot connect" into ``BrokerUnavailable`` live here only.
"""

from __future__ import annotations

from bp_core.errors import BrokerUnavailable
from bp_core.settings import Settings


def elasticsearch(settings: Settings, *, request_timeout: float = 30.0, retries: bool = True):
    """An Elasticsearch client for ``settings.es_url`` (basic auth when configured).

    ``retries=False`` leaves retrying to the caller (the consumer retries whole batches).
    """
    from elasticsearch import Elasticsearch

    auth = (settings.es_username, settings.es_password) if settings.es_username else None
    extra = {} if retries else {"retry_on_timeout": False, "max_retries": 0}
    return Elasticsearch(settings.es_url, basic_auth=auth, request_timeout=request_timeout, **extra)


def kafka_producer(settings: Settings, client_id: str, **config):
    """A kafka-python ``KafkaProducer`` (its defaults: acks=all, idempotent).

    Raises:
        BrokerUnavailable: no broker answered at ``settings.kafka_bootstrap``.
    """
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    try:
        return KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, client_id=client_id, **config)
    except KafkaError as exc:
        raise BrokerUnavailable(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}") from exc


def kafka_consumer(settings: Settings, client_id: str, *, group_id: str | None = None, **config):
    """A kafka-python ``KafkaConsumer`` that commits only when told (``group_id=None``:
    no group, partitions are assigned by the caller).

    Raises:
        BrokerUnavailable: no broker answered at ``settings.kafka_bootstrap``.
    """
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    config = {"enable_auto_commit": False, "auto_offset_reset": "earliest", **config}
    try:
        return KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, client_id=client_id,
                             group_id=group_id, **config)
    except KafkaError as exc:
        raise BrokerUnavailable(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}") from exc


def kafka_admin(settings: Settings, client_id: str, **config):
    """A kafka-python ``KafkaAdminClient``.

    Raises:
        BrokerUnavailable: no broker answered at ``settings.kafka_bootstrap``.
    """
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        return KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id=client_id, **config)
    except KafkaError as exc:
        raise BrokerUnavailable(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}") from exc


def fast_producer(settings: Settings, client_id: str, **config):
    """A confluent-kafka (librdkafka) ``Producer``: acks=all, idempotent, keys partitioned
    as Java and kafka-python clients do (murmur2). For the streams of about one record per
    consumed message (alerts, the patient-state changelog), where kafka-python's producer
    would cost several times the consumer's own work per message.

    Raises:
        BrokerUnavailable: the configuration is refused (the broker is reached lazily).
    """
    import logging

    from confluent_kafka import KafkaException, Producer

    try:  # librdkafka's own log lines go through Python's logging, not straight to stderr
        return Producer({"logger": logging.getLogger("bp_core.kafka"),
                         "bootstrap.servers": settings.kafka_bootstrap, "client.id": client_id,
                         "acks": "all", "enable.idempotence": True, "partitioner": "murmur2_random",
                         "linger.ms": 5, "compression.type": "lz4", **config})
    except KafkaException as exc:
        raise BrokerUnavailable(f"cannot create a producer for {settings.kafka_bootstrap}: {exc}") from exc
