"""Heartbeats: whoever runs a job (a file job in batch, a training job) says now and then that it is alive,
so that the job of a replica that died is recovered by another."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def heartbeat(
    beat: Callable[[], Awaitable[None]], every_seconds: float, name: str
) -> AsyncIterator[None]:
    """Await `beat()` every `every_seconds` in the background while the block runs. A beat that fails (the
    database away for a moment) is logged and the next one comes as usual: recovery waits for several
    missed beats, so one failure must not silence the rest."""

    async def beat_forever() -> None:
        while True:
            await asyncio.sleep(every_seconds)
            try:
                await beat()
            except Exception:
                log.warning(
                    "a heartbeat failed; the next one comes as usual", extra={"task": name}, exc_info=True
                )

    task = asyncio.create_task(beat_forever(), name=name)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
