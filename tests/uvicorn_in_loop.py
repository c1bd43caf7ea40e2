"""uvicorn serving an app in the test's own event loop, for tests that need real sockets and the app's
objects in reach."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import uvicorn

from tests.waiting import eventually


@contextlib.asynccontextmanager
async def serving_in_this_loop(
    config: uvicorn.Config, *, within: float = 60
) -> AsyncIterator[uvicorn.Server]:
    """uvicorn serving `config` for the block (started within `within` seconds), then shut down."""
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started or task.done(), within=within, what="uvicorn serving")
        assert server.started, "uvicorn stopped while starting; see its log"
        yield server
    finally:
        server.should_exit = True
        await task


def bound_port(server: uvicorn.Server) -> int:
    """The port a server started with `port=0` listens on."""
    port: int = server.servers[0].sockets[0].getsockname()[1]
    return port
