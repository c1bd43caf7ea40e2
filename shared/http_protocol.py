"""uvicorn's HTTP protocol (httptools), sending each response in one write instead of two.

uvicorn writes a response's status line and headers (`http.response.start`) and its body
(`http.response.body`) with a `transport.write` each. Under uvloop each write is a `send` syscall at
once, and a second TCP segment the client must read: profiling serving at 6,000 requests a second
put about a quarter of a worker's busy time in those writes. Here the writes a response makes in one
turn of the event loop are joined and sent together at the end of the turn (`call_soon`), so a whole
small response costs one syscall. A response larger than `MAX_BUFFERED_BYTES`, or a write when the
connection closes, is sent at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# Beyond this a response is written at once: joining would copy a large body for one saved syscall.
MAX_BUFFERED_BYTES = 64 * 1024


class CoalescingTransport:
    """A transport whose writes in one turn of the event loop go out as one; the rest is the real one's."""

    __slots__ = ("_loop", "_pending", "_pending_bytes", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._pending_bytes = 0

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes > MAX_BUFFERED_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        if not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # get_extra_info, is_closing, pause_reading, set_protocol...
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a CoalescingTransport (give it to uvicorn as `http=`)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        coalescing = CoalescingTransport(transport, asyncio.get_running_loop())
        super().connection_made(coalescing)  # type: ignore[arg-type]
