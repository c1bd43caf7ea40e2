"""The bus interface: publish an event under a key; subscribe a handler under a consumer group.

Delivery is at-least-once. A record's offset is committed only after its handler succeeded or the
record was put on the topic's `.dlq`; a handler therefore must be idempotent (key it by event id).
Failed handlers are retried with exponential backoff; what still fails, or cannot be parsed at all,
goes to `<topic>.dlq` as a `DeadLetter` event with the reason, and the next record is processed.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from prometheus_client import Counter

from shared.events import CloudEvent, DeadLetter, InvalidEvent, dead_letter_topic

Handler = Callable[[CloudEvent], Awaitable[None]]
StartAt = Literal["earliest", "latest"]

log = logging.getLogger(__name__)

# The largest value a record may hold: Kafka's default limit on one record (the broker's message.max.bytes,
# the producers' max.request.size: 1 MiB) with room left for its key, headers and framing. A publisher of
# events that grow with their contents (prediction batches) keeps each one within it.
MAX_RECORD_BYTES = 1_000_000

EVENTS_PUBLISHED = Counter("flywheel_bus_events_published_total", "Events published", ["topic"])
EVENTS_HANDLED = Counter(
    "flywheel_bus_events_handled_total", "Events handled successfully", ["topic", "group"]
)
HANDLER_RETRIES = Counter(
    "flywheel_bus_handler_retries_total", "Handler failures that were retried", ["topic", "group"]
)
EVENTS_DEAD_LETTERED = Counter(
    "flywheel_bus_events_dead_lettered_total", "Records sent to .dlq", ["topic", "group"]
)


@dataclass(frozen=True, slots=True)
class RawRecord:
    """A record as it came off the log, before it is parsed."""

    topic: str
    partition: int | None
    offset: int | None
    key: bytes | None
    value: bytes


class Subscription(ABC):
    """A running consumer; `close` stops it after the record in hand, keeping committed offsets."""

    @abstractmethod
    async def close(self) -> None: ...


class EventBus(ABC):
    """Publish/subscribe over topics, with at-least-once delivery and dead-lettering."""

    def __init__(self, *, max_attempts: int = 5, retry_backoff_seconds: float = 0.2) -> None:
        self.max_attempts = max_attempts
        self.retry_backoff_seconds = retry_backoff_seconds

    @abstractmethod
    async def start(self) -> None:
        """Connect, and create the platform's topics (and their `.dlq` twins) if they are missing."""

    @abstractmethod
    async def stop(self) -> None:
        """Close every subscription, then flush and close the producer."""

    async def publish(self, topic: str, event: CloudEvent, key: str | None = None) -> None:
        """Append `event` to `topic`; returns once the log has it durably. Same key, same partition."""
        await self.publish_raw(topic, event.to_json(), key.encode() if key is not None else None)
        EVENTS_PUBLISHED.labels(topic).inc()

    @abstractmethod
    async def publish_raw(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        """Append bytes as any producer could: for records that are not Flywheel events."""

    @abstractmethod
    async def subscribe(
        self, topic: str, group: str, handler: Handler, *, new_group_starts_at: StartAt = "earliest"
    ) -> Subscription:
        """Start consuming `topic` as a member of `group`, from the group's committed offset. A new group
        starts at the beginning of the log, or with `latest` at its end (only what is published from now
        on: for a replica that needs every future event but none of the past, in a group of its own)."""

    async def ready(self) -> bool:
        """Whether the bus can publish right now (used by readiness probes)."""
        return True

    async def deliver(self, record: RawRecord, group: str, handler: Handler) -> None:
        """Process one record to completion: handled, or dead-lettered. Never raises for the record's
        own faults, so the caller may commit its offset afterwards."""
        try:
            event = CloudEvent.from_json(record.value)
        except InvalidEvent as error:
            await self._dead_letter(record, group, error, attempts=0)
            return
        for attempt in range(1, self.max_attempts + 1):
            try:
                await handler(event)
            except InvalidEvent as error:  # the handler says the event can never be processed
                await self._dead_letter(record, group, error, attempts=attempt)
                return
            except Exception as error:
                if attempt == self.max_attempts:
                    await self._dead_letter(record, group, error, attempts=attempt)
                    return
                HANDLER_RETRIES.labels(record.topic, group).inc()
                delay = self.retry_backoff_seconds * 2 ** (attempt - 1)
                log.warning(
                    "handler failed, retrying",
                    extra={
                        "topic": record.topic,
                        "group": group,
                        "event_id": event.id,
                        "attempt": attempt,
                        "retry_in_s": delay,
                        "error": repr(error),
                    },
                )
                await asyncio.sleep(delay)
            else:
                EVENTS_HANDLED.labels(record.topic, group).inc()
                return

    async def _dead_letter(self, record: RawRecord, group: str, error: Exception, attempts: int) -> None:
        letter = DeadLetter.of_raw(
            record.value,
            source_topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key.decode("utf-8", "replace") if record.key is not None else None,
            consumer_group=group,
            error=f"{type(error).__name__}: {error}",
            attempts=attempts,
        )
        log.error(
            "record dead-lettered",
            extra={"topic": record.topic, "group": group, "offset": record.offset, "error": letter.error},
        )
        await self.publish(
            dead_letter_topic(record.topic),
            CloudEvent.wrap(letter, source=f"/flywheel/consumer/{group}"),
            key=letter.key,
        )
        EVENTS_DEAD_LETTERED.labels(record.topic, group).inc()
