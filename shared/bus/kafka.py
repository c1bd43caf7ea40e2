"""The bus on Apache Kafka: an acks=all idempotent producer (librdkafka, `shared.bus.producer`) and
commit-after-handle consumers (aiokafka)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from shared.bus.base import EventBus, Handler, RawRecord, StartAt, Subscription
from shared.bus.producer import KafkaProducer
from shared.events import Topic, dead_letter_topic

log = logging.getLogger(__name__)

CONTENT_TYPE_HEADER = ("content-type", b"application/cloudevents+json")


def platform_topics() -> list[str]:
    """Every topic the platform uses: each `Topic` and its dead-letter twin."""
    return [name for topic in Topic for name in (topic.value, dead_letter_topic(topic.value))]


class KafkaSubscription(Subscription):
    def __init__(self, consumer: AIOKafkaConsumer, task: asyncio.Task[None]) -> None:
        self._consumer = consumer
        self._task = task

    def assignment(self) -> set[TopicPartition]:
        """The partitions this member consumes now (empty until the group has balanced)."""
        assigned: set[TopicPartition] = self._consumer.assignment()
        return assigned

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._consumer.stop()


class KafkaBus(EventBus):
    """`EventBus` on Kafka. `extra_topics` are created at start beside the platform's own.

    A `namespace` prefixes every topic and consumer group on the cluster (`<namespace>.run-completed`),
    so that several deployments (staging and production, or parallel test runs) can share one cluster;
    callers always use the plain names.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        client_id: str,
        partitions: int = 3,
        replication_factor: int = 1,
        extra_topics: Iterable[str] = (),
        max_attempts: int = 5,
        retry_backoff_seconds: float = 0.2,
        poll_max_records: int = 500,
        namespace: str | None = None,
    ) -> None:
        super().__init__(max_attempts=max_attempts, retry_backoff_seconds=retry_backoff_seconds)
        self.bootstrap_servers = bootstrap_servers
        self.client_id = client_id
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.topics = [*platform_topics(), *extra_topics]
        self.poll_max_records = poll_max_records
        self.prefix = f"{namespace}." if namespace else ""
        self._producer: KafkaProducer | None = None
        self._subscriptions: list[KafkaSubscription] = []

    async def start(self) -> None:
        await self.ensure_topics(self.topics)
        producer = KafkaProducer(self.bootstrap_servers, client_id=self.client_id)
        producer.start()
        self._producer = producer

    async def stop(self) -> None:
        for subscription in self._subscriptions:
            await subscription.close()
        self._subscriptions.clear()
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def ensure_topics(self, topics: Iterable[str]) -> None:
        """Create the topics that do not exist yet; safe when several services start at once."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers, client_id=self.client_id)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            missing = [name for name in dict.fromkeys(map(self.cluster_name, topics)) if name not in existing]
            if not missing:
                return
            response = await admin.create_topics(
                [NewTopic(name, self.partitions, self.replication_factor) for name in missing]
            )
            for topic_error in response.topic_errors:
                name, code = topic_error[0], topic_error[1]
                error_type = for_code(code)
                if code and error_type is not TopicAlreadyExistsError:
                    raise error_type(f"could not create topic {name!r}")
            log.info("topics created", extra={"topics": missing})
        finally:
            await admin.close()

    async def publish_raw(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        if self._producer is None:
            raise RuntimeError("KafkaBus.publish before start()")
        await self._producer.send(self.cluster_name(topic), value, key, [CONTENT_TYPE_HEADER])

    async def subscribe(
        self, topic: str, group: str, handler: Handler, *, new_group_starts_at: StartAt = "earliest"
    ) -> Subscription:
        consumer = AIOKafkaConsumer(
            self.cluster_name(topic),
            bootstrap_servers=self.bootstrap_servers,
            client_id=f"{self.client_id}-{group}",
            group_id=self.cluster_name(group),
            enable_auto_commit=False,
            auto_offset_reset=new_group_starts_at,
        )
        await consumer.start()
        task = asyncio.create_task(self._consume(consumer, group, handler), name=f"consume:{topic}:{group}")
        subscription = KafkaSubscription(consumer, task)
        self._subscriptions.append(subscription)
        return subscription

    def cluster_name(self, name: str) -> str:
        """The name of a topic or group on the cluster: prefixed by the namespace, if any."""
        return f"{self.prefix}{name}"

    async def ready(self) -> bool:
        """The producer is started and a broker answers a metadata request now."""
        return self._producer is not None and await self._producer.cluster_answers()

    async def _consume(self, consumer: AIOKafkaConsumer, group: str, handler: Handler) -> None:
        while True:
            try:
                batches: dict[TopicPartition, list[ConsumerRecord]] = await consumer.getmany(
                    timeout_ms=500, max_records=self.poll_max_records
                )
            except KafkaError as error:  # the client reconnects by itself; keep polling
                log.warning("poll failed", extra={"group": group, "error": repr(error)})
                await asyncio.sleep(1)
                continue
            for partition, records in batches.items():
                for record in records:
                    await self.deliver(
                        RawRecord(
                            record.topic.removeprefix(self.prefix),
                            record.partition,
                            record.offset,
                            record.key,
                            record.value,
                        ),
                        group,
                        handler,
                    )
                try:
                    await consumer.commit({partition: records[-1].offset + 1})
                except KafkaError as error:  # e.g. rebalanced away: the new owner redelivers
                    log.warning("commit failed after rebalance", extra={"group": group, "error": repr(error)})
