"""The bus in one process, for unit tests and the embedded mode: the same contract as Kafka's.

Each topic is an append-only log; each consumer group keeps a committed offset per topic, advanced
only after the handler succeeded or the record was dead-lettered. Members of one group share that
cursor, so each record goes to one member, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from dataclasses import dataclass, field

from shared.bus.base import EventBus, Handler, RawRecord, StartAt, Subscription


@dataclass
class _Log:
    records: list[RawRecord] = field(default_factory=list)
    appended: asyncio.Condition = field(default_factory=asyncio.Condition)


class InMemorySubscription(Subscription):
    def __init__(self, task: asyncio.Task[None]) -> None:
        self._task = task

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class InMemoryBus(EventBus):
    def __init__(self, *, max_attempts: int = 5, retry_backoff_seconds: float = 0.2) -> None:
        super().__init__(max_attempts=max_attempts, retry_backoff_seconds=retry_backoff_seconds)
        self._logs: defaultdict[str, _Log] = defaultdict(_Log)
        self._committed: defaultdict[tuple[str, str], int] = defaultdict(int)
        self._group_locks: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)
        self._subscriptions: list[InMemorySubscription] = []

    async def start(self) -> None:
        """Nothing to connect to: topics come into being on first use."""

    async def stop(self) -> None:
        for subscription in self._subscriptions:
            await subscription.close()
        self._subscriptions.clear()

    async def publish_raw(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        topic_log = self._logs[topic]
        async with topic_log.appended:
            topic_log.records.append(RawRecord(topic, 0, len(topic_log.records), key, value))
            topic_log.appended.notify_all()

    def records(self, topic: str) -> list[RawRecord]:
        """Everything appended to `topic` so far."""
        return list(self._logs[topic].records)

    async def subscribe(
        self, topic: str, group: str, handler: Handler, *, new_group_starts_at: StartAt = "earliest"
    ) -> Subscription:
        cursor = (topic, group)
        if new_group_starts_at == "latest" and cursor not in self._committed:
            self._committed[cursor] = len(self._logs[topic].records)
        task = asyncio.create_task(self._consume(topic, group, handler), name=f"consume:{topic}:{group}")
        subscription = InMemorySubscription(task)
        self._subscriptions.append(subscription)
        return subscription

    async def _consume(self, topic: str, group: str, handler: Handler) -> None:
        topic_log = self._logs[topic]
        cursor = (topic, group)
        while True:
            async with topic_log.appended:
                await topic_log.appended.wait_for(lambda: self._committed[cursor] < len(topic_log.records))
            async with self._group_locks[cursor]:
                offset = self._committed[cursor]
                if offset < len(topic_log.records):
                    await self.deliver(topic_log.records[offset], group, handler)
                    self._committed[cursor] = offset + 1
