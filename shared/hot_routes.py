"""Routes answered before FastAPI: what a service's lean ASGI layer for its busiest routes needs.

FastAPI's machinery around a route (its middleware stack, routing, dependency solving, the Request and
Response objects) costs tens to hundreds of microseconds a request: more than a small inference or a
one-statement database write. A service puts a layer of its own in front of it (`HotRoutesApp.answer_first`)
that answers its busiest routes with raw ASGI messages and passes every other request on to FastAPI.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HotRoutesApp(FastAPI):
    """FastAPI, with a service's hot routes tried first (`answer_first`): a layer in front of FastAPI's own
    per-request machinery, not a middleware inside it. Until a layer is set, a plain FastAPI app."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._first: ASGIApp = super().__call__

    def answer_first(self, layer: Callable[[ASGIApp], ASGIApp]) -> None:
        """Put `layer` in front of FastAPI; it is given FastAPI's app, to pass on what it does not answer."""
        self._first = layer(super().__call__)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self  # as Starlette sets it: the layer reads the app's state through it
        await self._first(scope, receive, send)


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a request header (`name` in lower case), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


class ReadAhead:
    """A request's body read by a hot route that may still hand the request on to FastAPI: `receive` gives
    the messages already read, then the rest, so FastAPI sees the request as if nothing had been read."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._read: deque[Message] = deque()

    async def body(self, limit: int) -> bytes | None:
        """The whole body; None when it passes `limit` bytes (reading stops there) or the client leaves."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self._receive()
            self._read.append(message)
            if message["type"] != "http.request":
                return None
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def receive(self) -> Message:
        if self._read:
            return self._read.popleft()
        return await self._receive()


@dataclass(frozen=True, slots=True)
class Reply:
    """A hot route's JSON answer, whichever layer writes it: ASGI messages (`send_reply`) or the HTTP
    protocol's fast lane (`shared.http_protocol`)."""

    status: int
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()


class ClientGone(Exception):
    """The caller disconnected before its body arrived: nobody to answer."""


async def send_reply(send: Send, reply: Reply) -> None:
    await send_json(send, reply.status, reply.body, reply.headers)


async def send_json(
    send: Send, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """A JSON answer in two ASGI messages."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-length", str(len(body)).encode()),
                (b"content-type", b"application/json"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
