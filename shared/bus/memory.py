"""The bus in one process, for unit tests and the embedded mode: the same contract as Kafka's.

Each topic is an append-only log; each consumer group keeps a committed offset per topic, advanced
only after the handler succeeded or the record was dead-lettered. Members of one group share that
cursor, so each record goes to one member, in order. With `retained_records_per_topic`, a topic keeps
only its latest records (as Kafka's retention would): a long-running embedded platform stays bounded, and
a group that fell further behind skips ahead to the oldest record kept, with a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from dataclasses import dataclass, field

from shared.bus.base import EventBus, Handler, RawRecord, StartAt, Subscription

log = logging.getLogger(__name__)


@dataclass
class _Log:
    records: list[RawRecord] = field(default_factory=list)
    first_offset: int = 0  # the offset of records[0]: older records were dropped by retention
    appended: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def end_offset(self) -> int:
        return self.first_offset + len(self.records)

    def drop_oldest(self, keep: int) -> None:
        # In chunks of a tenth, so that appending stays cheap on average.
        if len(self.records) > keep + keep // 10:
            dropped = len(self.records) - keep
            del self.records[:dropped]
            self.first_offset += dropped


class InMemorySubscription(Subscription):
    def __init__(self, task: asyncio.Task[None]) -> None:
        self._task = task

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class InMemoryBus(EventBus):
    def __init__(
        self,
        *,
        max_attempts: int = 5,
        retry_backoff_seconds: float = 0.2,
        retained_records_per_topic: int | None = None,
    ) -> None:
        super().__init__(max_attempts=max_attempts, retry_backoff_seconds=retry_backoff_seconds)
        self._retained = retained_records_per_topic
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
            topic_log.records.append(RawRecord(topic, 0, topic_log.end_offset, key, value))
            if self._retained is not None:
                topic_log.drop_oldest(self._retained)
            topic_log.appended.notify_all()

    def records(self, topic: str) -> list[RawRecord]:
        """Everything appended to `topic` so far (that retention kept)."""
        return list(self._logs[topic].records)

    async def subscribe(
        self, topic: str, group: str, handler: Handler, *, new_group_starts_at: StartAt = "earliest"
    ) -> Subscription:
        cursor = (topic, group)
        if new_group_starts_at == "latest" and cursor not in self._committed:
            self._committed[cursor] = self._logs[topic].end_offset
        task = asyncio.create_task(self._consume(topic, group, handler), name=f"consume:{topic}:{group}")
        subscription = InMemorySubscription(task)
        self._subscriptions.append(subscription)
        return subscription

    async def _consume(self, topic: str, group: str, handler: Handler) -> None:
        topic_log = self._logs[topic]
        cursor = (topic, group)
        while True:
            async with topic_log.appended:
                await topic_log.appended.wait_for(lambda: self._committed[cursor] < topic_log.end_offset)
            async with self._group_locks[cursor]:
                offset = self._committed[cursor]
                if offset < topic_log.first_offset:
                    log.warning(
                        "group %s fell %d records behind what %s retains; skipping ahead",
                        group,
                        topic_log.first_offset - offset,
                        topic,
                    )
                    offset = self._committed[cursor] = topic_log.first_offset
                if offset < topic_log.end_offset:
                    await self.deliver(topic_log.records[offset - topic_log.first_offset], group, handler)
                    self._committed[cursor] = offset + 1
