"""A service of two real uvicorn workers for the connection-balance test: each answers with its pid, and
worker 1 starts accepting `LATE_START_SECONDS` after worker 0, so that the connections a client opens
first all land on worker 0. `POST /pid` is answered by the protocol's fast lane (`PidRoutes`), any other
request by the app. Run it with `python -m tests.pid_app PORT`."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from shared.hot_routes import Reply
from shared.http_protocol import FAST_ROUTES, this_workers_connection_counts
from shared.service import ServiceSettings, run_service
from shared.workers import claim_worker_slot

LATE_START_SECONDS = 3.0

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class PidRoutes:
    """Fast routes: `POST /pid` answered with this worker's pid, marked as the lane's."""

    max_body_bytes = 1024

    def match(self, method: bytes, path: str) -> str | None:
        return path if (method, path) == (b"POST", "/pid") else None

    async def answer(
        self, route: str, headers: Iterable[tuple[bytes, bytes]], read_body: Callable[[], Awaitable[bytes]]
    ) -> Reply:
        await read_body()
        return Reply(200, str(os.getpid()).encode(), ((b"x-answered-by", b"lane"),))


def create_app() -> Callable[[dict[str, Any], Receive, Send], Awaitable[None]]:
    slot = claim_worker_slot("pid-app")

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()  # startup
            if slot.number == 1:
                await asyncio.sleep(LATE_START_SECONDS)
            this_workers_connection_counts()  # as create_service_app does, once it accepts
            scope["state"][FAST_ROUTES] = PidRoutes()
            await send({"type": "lifespan.startup.complete"})
            await receive()  # shutdown
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = str(os.getpid()).encode()
        headers = [(b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


class PidAppSettings(ServiceSettings):
    port: int = 0


if __name__ == "__main__":
    settings = PidAppSettings(port=int(sys.argv[1]))
    run_service("pidapp", "tests.pid_app:create_app", settings, "warning", workers=2)
