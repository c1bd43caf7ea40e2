"""The transactional outbox: events written in the same transaction as the change they announce, and
published after it commits.

So no change is committed without its event, and no event is sent for a change that rolled back.
Delivery is at-least-once (a crash between send and mark resends), which consumers handle by event id.
A service that uses it creates the `outbox` table in its own schema (see OUTBOX_TABLE in its migrations).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from shared.bus import EventBus
from shared.db import Connection
from shared.events import CloudEvent

log = logging.getLogger(__name__)

BATCH_SIZE = 100
IDLE_POLL_SECONDS = 1.0


async def enqueue_event(connection: Connection, topic: str, event: CloudEvent, key: str | None) -> None:
    """Write the event in the caller's transaction; the publisher sends it after commit."""
    await connection.execute(
        "INSERT INTO outbox (topic, key, event) VALUES ($1, $2, $3)",
        topic,
        key,
        event.model_dump(mode="json", exclude_none=True),
    )


class OutboxPublisher:
    def __init__(self, database: asyncpg.Pool, bus: EventBus, name: str) -> None:
        self.database = database
        self.bus = bus
        self.name = name
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"{self.name}-outbox")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def notify(self) -> None:
        """A transaction with events just committed: publish now rather than at the next poll."""
        self._wake.set()

    async def publish_pending(self) -> int:
        """Send one batch of unpublished events, oldest first; how many were sent. Rows are locked with
        SKIP LOCKED, so replicas publishing at once never send the same row twice."""
        async with self.database.acquire() as connection, connection.transaction():
            rows = await connection.fetch(
                "SELECT id, topic, key, event FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1 "
                "FOR UPDATE SKIP LOCKED",
                BATCH_SIZE,
            )
            for row in rows:
                await self.bus.publish(row["topic"], CloudEvent.model_validate(row["event"]), key=row["key"])
            if rows:
                await connection.execute(
                    "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])",
                    [row["id"] for row in rows],
                )
        return len(rows)

    async def _run(self) -> None:
        while True:
            try:
                while await self.publish_pending() == BATCH_SIZE:
                    pass
            except Exception:  # the bus or database is down: keep the events, try again at the next poll
                log.exception("publishing the outbox failed; retrying", extra={"outbox": self.name})
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow the cancellation that stop()
            # sends when the wake-up lands at the same moment, and the task would never end.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(IDLE_POLL_SECONDS):
                    await self._wake.wait()
            self._wake.clear()
