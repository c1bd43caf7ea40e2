"""uvicorn's HTTP protocol (httptools) as every service runs it: each response in one write instead of
two, and, with several workers, keep-alive connections spread evenly over them.

One write. uvicorn writes a response's status line and headers (`http.response.start`) and its body
(`http.response.body`) with a `transport.write` each. Under uvloop each write is a `send` syscall at
once, and a second TCP segment the client must read: profiling serving at 6,000 requests a second
put about a quarter of a worker's busy time in those writes. Here the writes a response makes in one
turn of the event loop are joined and sent together at the end of the turn (`call_soon`), so a whole
small response costs one syscall. A response larger than `MAX_BUFFERED_BYTES`, or a write when the
connection closes, is sent at once.

Even connections. uvicorn's workers accept from one shared listening socket, and whichever worker's
event loop is awake when connections arrive takes all it finds: a client opening 16 keep-alive connections
at once was seen to put all 16 on one of two serving workers, leaving the other core idle (half the
machine's rate) for as long as the connections lived. So each worker publishes how many connections it
holds (`shared.workers.ConnectionCounts`), and a worker holding two or more than the least loaded one
answers its next request with `Connection: close` and closes that connection after the answer (one every
0.1 s at most: until the client's next request brings it back, no worker counts it). The client
reconnects (as HTTP/1.1 clients do for servers that recycle connections, like nginx's
`keepalive_requests`), most likely to the idle worker, which waits in accept while the busy one works; if
it lands on the busy one again, the next request there does the same, until the counts are even.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from prometheus_client import Counter
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shared.workers import ConnectionCounts

# Beyond this a response is written at once: joining would copy a large body for one saved syscall.
MAX_BUFFERED_BYTES = 64 * 1024

CONNECTIONS_HANDED_OVER = Counter(
    "flywheel_http_connections_handed_over_total",
    "Keep-alive connections a worker closed after an answer because it held more than its share",
)


@functools.cache
def this_workers_connection_counts() -> ConnectionCounts | None:
    """Claimed once per worker process: `create_service_app` does it as the worker starts accepting."""
    return ConnectionCounts.for_this_worker()


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


class ServiceHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a CoalescingTransport, counting this worker's connections and
    handing one over when it holds more than its share (give it to uvicorn as `http=`)."""

    counts: ConnectionCounts | None = None
    counted = False  # whether this connection is in this worker's count (until it closes or is handed over)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        coalescing = CoalescingTransport(transport, asyncio.get_running_loop())
        super().connection_made(coalescing)  # type: ignore[arg-type]
        self.counts = this_workers_connection_counts()
        if self.counts is not None:
            self.counts.add(1)
            self.counted = True

    def connection_lost(self, exc: Exception | None) -> None:
        self._uncount()
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        if (
            self.counted
            and self.counts is not None
            and cycle is not None
            and cycle.keep_alive
            and not cycle.response_complete
            and self.counts.hand_over_one()
        ):
            # uvicorn then answers with `connection: close` and closes after the answer (as on shutdown).
            cycle.keep_alive = False
            self._uncount()
            CONNECTIONS_HANDED_OVER.inc()

    def _uncount(self) -> None:
        if self.counted and self.counts is not None:
            self.counts.add(-1)
            self.counted = False
