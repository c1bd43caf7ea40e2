"""The event bus: Kafka in production, in-memory for unit tests and the embedded mode."""

from shared.bus.base import MAX_RECORD_BYTES, EventBus, Handler, RawRecord, StartAt, Subscription
from shared.bus.kafka import KafkaBus, platform_topics
from shared.bus.memory import InMemoryBus
from shared.settings import FlywheelSettings


def create_bus(settings: FlywheelSettings, *, client_id: str) -> EventBus:
    """Kafka when `FLYWHEEL_KAFKA_BOOTSTRAP` is set, else the in-memory bus."""
    if settings.kafka_bootstrap:
        return KafkaBus(
            settings.kafka_bootstrap,
            client_id=client_id,
            partitions=settings.kafka_topic_partitions,
            replication_factor=settings.kafka_replication_factor,
            max_attempts=settings.bus_max_attempts,
            retry_backoff_seconds=settings.bus_retry_backoff_seconds,
            namespace=settings.kafka_namespace,
        )
    return InMemoryBus(
        max_attempts=settings.bus_max_attempts, retry_backoff_seconds=settings.bus_retry_backoff_seconds
    )


__all__ = [
    "MAX_RECORD_BYTES",
    "EventBus",
    "Handler",
    "InMemoryBus",
    "KafkaBus",
    "RawRecord",
    "StartAt",
    "Subscription",
    "create_bus",
    "platform_topics",
]
