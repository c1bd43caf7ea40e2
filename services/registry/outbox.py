"""Publishes the events the registry wrote to its outbox table, after the transactions that wrote them.

Writing an event in the same transaction as the change it announces means no change is committed
without its event, and no event is sent for a change that rolled back. Delivery is at-least-once
(a crash between send and mark resends), which consumers handle by event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from services.registry import model_repository as repository
from shared.bus import EventBus
from shared.events import CloudEvent

log = logging.getLogger(__name__)

BATCH_SIZE = 100
IDLE_POLL_SECONDS = 1.0


class OutboxPublisher:
    def __init__(self, database: asyncpg.Pool, bus: EventBus) -> None:
        self.database = database
        self.bus = bus
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="registry-outbox")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def notify(self) -> None:
        """A transaction with events just committed: publish now rather than at the next poll."""
        self._wake.set()

    async def publish_pending(self) -> int:
        """Send one batch of unpublished events; how many were sent."""
        async with self.database.acquire() as connection, connection.transaction():
            rows = await repository.claim_unpublished(connection, BATCH_SIZE)
            for row in rows:
                await self.bus.publish(row["topic"], CloudEvent.model_validate(row["event"]), key=row["key"])
            if rows:
                await repository.mark_published(connection, [row["id"] for row in rows])
        return len(rows)

    async def _run(self) -> None:
        while True:
            try:
                while await self.publish_pending() == BATCH_SIZE:
                    pass
            except Exception:  # the bus or database is down: keep the events, try again at the next poll
                log.exception("publishing the outbox failed; retrying")
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow the cancellation that stop()
            # sends when the wake-up lands at the same moment, and the task would never end.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(IDLE_POLL_SECONDS):
                    await self._wake.wait()
            self._wake.clear()
