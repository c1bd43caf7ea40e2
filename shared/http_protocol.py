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

A fast lane. A service whose lifespan yields `{FAST_ROUTES: routes}` (serving's inference routes) has the
requests those routes match answered from here, below ASGI: no scope for the app, no ASGI messages, no
header checks on the way out, one write. Measured with serving, that is a fifth of the event loop's time
a 1-row request (bench/README.md). The request is carried by a `FastRouteCycle` that stands in uvicorn's
own request cycle, so uvicorn's pipelining, keep-alive timer, flow control, shutdown and disconnects drive
it unchanged. Whatever the lane does not take plainly (HTTP/1.0, `Expect: 100-continue`, upgrades, bodies
without a length or over the routes' limit, escaped paths) goes through uvicorn and the app as usual, where
the same routes answer it (see `services/serving/hot_routes.py`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

import orjson
from prometheus_client import Counter
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from shared.hot_routes import ClientGone, Reply
from shared.workers import ConnectionCounts

log = logging.getLogger(__name__)

# Beyond this a response is written at once: joining would copy a large body for one saved syscall.
MAX_BUFFERED_BYTES = 64 * 1024

CONNECTIONS_HANDED_OVER = Counter(
    "flywheel_http_connections_handed_over_total",
    "Keep-alive connections a worker closed after an answer because it held more than its share",
)


# The lifespan state's key under which a service gives its fast routes (a `FastRoutes`) to this protocol.
FAST_ROUTES = "flywheel.fast_routes"


class FastRoutes(Protocol):
    """Routes answered by the HTTP protocol itself, below ASGI (see the module's docstring)."""

    max_body_bytes: int  # larger bodies go through the app, which refuses them

    def match(self, method: bytes, path: str) -> Any | None:
        """The route a request is (passed back to `answer`), or None to leave it to the app."""

    async def answer(
        self, route: Any, headers: Iterable[tuple[bytes, bytes]], read_body: Callable[[], Awaitable[bytes]]
    ) -> Reply | None:
        """The reply, or None when the caller left (`read_body` raised ClientGone). `headers`: names in
        lower case. The reply's headers are written as they are, unchecked (no CR or LF in them)."""


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


class FastRouteCycle:
    """A request the fast routes answer, in the place of uvicorn's RequestResponseCycle: the protocol feeds
    it the body (`body`, `more_body`, `message_event`), marks it `disconnected` when the connection drops,
    turns `keep_alive` off on shutdown or hand-over, and starts `run_asgi` when the requests pipelined
    before it are answered; it ends as uvicorn's cycle does (`response_complete`, then the protocol's
    `on_response_complete`, which starts the next one or the keep-alive timer)."""

    __slots__ = (
        "body",
        "disconnected",
        "headers",
        "keep_alive",
        "message_event",
        "more_body",
        "protocol",
        "response_complete",
        "route",
        "routes",
    )

    def __init__(
        self,
        protocol: ServiceHttpProtocol,
        routes: FastRoutes,
        route: Any,
        headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
    ) -> None:
        self.protocol = protocol
        self.routes = routes
        self.route = route
        self.headers = headers
        self.keep_alive = keep_alive
        self.response_complete = False
        self.disconnected = False
        self.more_body = True
        self.body = b""
        self.message_event = asyncio.Event()

    async def read_body(self) -> bytes:
        while self.more_body and not self.disconnected:
            self.protocol.flow.resume_reading()  # paused by the protocol past its high-water mark
            await self.message_event.wait()
            self.message_event.clear()
        if self.disconnected:
            raise ClientGone
        return self.body

    async def run_asgi(self, app: object) -> None:  # the name uvicorn starts a cycle by; `app` is unused
        try:
            reply = await self.routes.answer(self.route, self.headers, self.read_body)
        except Exception:  # a bug: answered as uvicorn answers an app's exception
            log.exception("a fast route failed")
            reply = Reply(500, orjson.dumps({"error": "internal error; see the service's log"}))
        if reply is None or self.disconnected:
            return
        protocol = self.protocol
        head = [STATUS_LINE[reply.status]]
        head.extend(b"%s: %s\r\n" % header for header in protocol.server_state.default_headers)
        head.append(b"content-length: %d\r\ncontent-type: application/json\r\n" % len(reply.body))
        head.extend(b"%s: %s\r\n" % header for header in reply.headers)
        if not self.keep_alive:
            head.append(b"connection: close\r\n")
        head.append(b"\r\n")
        head.append(reply.body)
        protocol.transport.write(b"".join(head))
        self.response_complete = True
        self.message_event.set()
        if not self.keep_alive:
            protocol.transport.close()
        protocol.on_response_complete()


class ServiceHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a CoalescingTransport, counting this worker's connections and
    handing one over when it holds more than its share, with the app's fast routes answered in a lane of
    their own (give it to uvicorn as `http=`)."""

    counts: ConnectionCounts | None = None
    counted = False  # whether this connection is in this worker's count (until it closes or is handed over)
    fast_routes: FastRoutes | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        coalescing = CoalescingTransport(transport, asyncio.get_running_loop())
        super().connection_made(coalescing)  # type: ignore[arg-type]
        self.counts = this_workers_connection_counts()
        if self.counts is not None:
            self.counts.add(1)
            self.counted = True
        if not self.root_path and self.limit_concurrency is None:  # else every request goes through uvicorn
            self.fast_routes = self.app_state.get(FAST_ROUTES)

    def connection_lost(self, exc: Exception | None) -> None:
        self._uncount()
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        cycle = self._fast_route_cycle()
        if cycle is None:
            super().on_headers_complete()
        else:
            existing, self.cycle = self.cycle, cycle  # type: ignore[assignment]
            if existing is None or existing.response_complete:
                self._start_asgi_task(cycle, self.app)  # type: ignore[arg-type]
            else:  # pipelined: uvicorn starts it once the answers before it are written
                self.flow.pause_reading()
                self.pipeline.appendleft((cycle, self.app))  # type: ignore[arg-type]
        self._hand_over_if_more_than_share()

    def _fast_route_cycle(self) -> FastRouteCycle | None:
        """A cycle for this request when the fast routes take it, plainly; None leaves it to uvicorn."""
        routes = self.fast_routes
        if routes is None or self.expect_100_continue:
            return None
        parser = self.parser
        if parser.get_http_version() != "1.1" or parser.should_upgrade():
            return None
        path = self.url.partition(b"?")[0]
        if b"%" in path:
            return None
        route = routes.match(parser.get_method(), path.decode("latin-1"))
        if route is None:
            return None
        length = None
        for name, value in self.headers:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                return None
        if length is None or not length.isdigit() or int(length) > routes.max_body_bytes:
            return None
        return FastRouteCycle(self, routes, route, self.headers, parser.should_keep_alive())

    def _hand_over_if_more_than_share(self) -> None:
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
