"""The fast lane of the services' HTTP protocol (`shared.http_protocol`), on real sockets: uvicorn with
`ServiceHttpProtocol` in front of an app whose lifespan gives it fast routes. The routes answer what they
match, as uvicorn's own request cycle would (keep-alive, pipelining in order, `Connection: close`, large
bodies, a client leaving, a shutdown mid-body, a failing route); whatever the lane does not take plainly
reaches the app."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import uvicorn

from shared.hot_routes import ClientGone, Reply
from shared.http_protocol import FAST_ROUTES, ServiceHttpProtocol
from tests.uvicorn_in_loop import bound_port, serving_in_this_loop
from tests.waiting import eventually

BODY_LIMIT = 256 * 1024
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class LaneRoutes:
    """Fast routes for POST /lane/...: the answer names the route, the body's size and digest and the
    request id; /lane/fail raises; /lane/slow waits for `release` before answering."""

    max_body_bytes: int = BODY_LIMIT
    callers_gone: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def match(self, method: bytes, path: str) -> str | None:
        return path if method == b"POST" and path.startswith("/lane/") else None

    async def answer(
        self, route: str, headers: Iterable[tuple[bytes, bytes]], read_body: Callable[[], Awaitable[bytes]]
    ) -> Reply | None:
        if route == "/lane/fail":
            raise RuntimeError("a bug in a route")
        try:
            body = await read_body()
        except ClientGone:
            self.callers_gone += 1
            return None
        if route == "/lane/slow":
            await self.release.wait()
        request_id = dict(headers).get(b"x-request-id", b"").decode()
        answer = {"by": "lane", "route": route, "bytes": len(body), "sha": sha(body), "id": request_id}
        return Reply(200, orjson.dumps(answer), ((b"x-request-id", request_id.encode()),))


def sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:16]


def app_with(routes: LaneRoutes) -> Callable[[dict[str, Any], Receive, Send], Awaitable[None]]:
    """An ASGI app whose lifespan gives the protocol `routes`; it answers every request it gets itself."""

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()
            scope["state"][FAST_ROUTES] = routes
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        answer = orjson.dumps({"by": "app", "path": scope["path"], "bytes": len(body), "sha": sha(body)})
        headers = [(b"content-length", b"%d" % len(answer)), (b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    return app


@dataclass
class Server:
    routes: LaneRoutes
    server: uvicorn.Server
    port: int

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    routes = LaneRoutes()
    config = uvicorn.Config(
        app_with(routes), port=0, http=ServiceHttpProtocol, log_config=None, timeout_graceful_shutdown=10
    )
    async with serving_in_this_loop(config, within=30) as server:
        yield Server(routes, server, bound_port(server))
        routes.release.set()  # before the shutdown, which waits for the answers in flight


def request(path: str, body: bytes = b"", *, extra: bytes = b"", request_id: str = "r") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nhost: test\r\nx-request-id: {request_id}\r\n"
        f"content-length: {len(body)}\r\n".encode()
        + extra
        + b"\r\n"
        + body
    )


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: dict[str, Any]


async def read_response(reader: asyncio.StreamReader) -> Response:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
    headers = {name.lower(): value for name, _, value in (line.partition(": ") for line in lines)}
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 10)
    return Response(int(status_line.split()[1]), headers, orjson.loads(body))


async def test_a_matched_request_is_answered_by_the_routes_on_a_kept_alive_connection(server: Server) -> None:
    reader, writer = await server.connect()
    for number in range(3):
        body = b'{"instances": [[%d]]}' % number
        writer.write(request(f"/lane/{number}", body, request_id=f"id-{number}"))
        response = await read_response(reader)
        assert response.status == 200
        assert response.body == {
            "by": "lane",
            "route": f"/lane/{number}",
            "bytes": len(body),
            "sha": sha(body),
            "id": f"id-{number}",
        }
        assert response.headers["content-type"] == "application/json"
        assert response.headers["x-request-id"] == f"id-{number}"
        assert {"date", "server"} <= set(response.headers)  # uvicorn's default headers, as the app's get
        assert "connection" not in response.headers
    writer.close()


async def test_pipelined_requests_are_answered_in_order(server: Server) -> None:
    reader, writer = await server.connect()
    # The first waits: the app's request and the lane's after it must wait for it, not overtake it.
    writer.write(request("/lane/slow", b"1") + request("/app", b"22") + request("/lane/third", b"333"))
    await asyncio.sleep(0.2)
    server.routes.release.set()
    answers = [(await read_response(reader)).body for _ in range(3)]
    assert [(answer["by"], answer["bytes"]) for answer in answers] == [("lane", 1), ("app", 2), ("lane", 3)]
    writer.close()


async def test_connection_close_is_answered_then_the_connection_closes(server: Server) -> None:
    reader, writer = await server.connect()
    writer.write(request("/lane/last", b"x", extra=b"connection: close\r\n"))
    response = await read_response(reader)
    assert (response.status, response.body["by"], response.headers["connection"]) == (200, "lane", "close")
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()


@pytest.mark.parametrize(
    ("what", "raw"),
    [
        ("HTTP/1.0", b"POST /lane/a HTTP/1.0\r\ncontent-length: 2\r\n\r\n{}"),
        (
            "a chunked body",
            b"POST /lane/a HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        ),
        ("a body over the routes' limit", request("/lane/a", b"x" * (BODY_LIMIT + 1))),
        ("an escaped path", request("/lane/%61", b"{}")),
        ("another method", b"PUT /lane/a HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}"),
        ("a path the routes do not match", request("/other", b"{}")),
    ],
)
async def test_what_the_lane_does_not_take_plainly_reaches_the_app(
    server: Server, what: str, raw: bytes
) -> None:
    reader, writer = await server.connect()
    writer.write(raw)
    response = await read_response(reader)
    assert (response.status, response.body["by"]) == (200, "app"), what
    writer.close()


async def test_expect_100_continue_goes_through_uvicorn(server: Server) -> None:
    reader, writer = await server.connect()
    writer.write(request("/lane/a", extra=b"expect: 100-continue\r\n").replace(b"length: 0", b"length: 2"))
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10) == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"{}")
    response = await read_response(reader)
    assert (response.body["by"], response.body["bytes"]) == ("app", 2)
    writer.close()


async def test_a_body_larger_than_the_read_buffer_arrives_whole(server: Server) -> None:
    """Past uvicorn's high-water mark (64 KiB) the protocol stops reading; the lane resumes it."""
    body = bytes(range(256)) * 800  # 204,800 bytes
    reader, writer = await server.connect()
    raw = request("/lane/large", body)
    for start in range(0, len(raw), 16_384):
        writer.write(raw[start : start + 16_384])
        await writer.drain()
        await asyncio.sleep(0.001)
    response = await read_response(reader)
    assert (response.body["bytes"], response.body["sha"]) == (len(body), sha(body))
    writer.close()


async def test_a_client_leaving_before_its_body_arrives_is_not_answered(server: Server) -> None:
    reader, writer = await server.connect()
    writer.write(request("/lane/left", b"x" * 1000)[:-500])
    await writer.drain()
    await asyncio.sleep(0.1)
    writer.close()
    await eventually(
        lambda: server.routes.callers_gone == 1, within=10, what="the route told the caller left"
    )
    reader, writer = await server.connect()  # and the server answers the next one
    writer.write(request("/lane/next", b"{}"))
    assert (await read_response(reader)).status == 200
    writer.close()


async def test_a_shutdown_while_a_body_arrives_answers_it_then_closes(server: Server) -> None:
    reader, writer = await server.connect()
    raw = request("/lane/during-shutdown", b"y" * 1000)
    writer.write(raw[:-10])
    await writer.drain()
    await asyncio.sleep(0.1)
    server.server.should_exit = True
    await asyncio.sleep(0.3)  # uvicorn has stopped accepting and asked each connection to shut down
    writer.write(raw[-10:])
    response = await read_response(reader)
    assert (response.status, response.body["bytes"], response.headers["connection"]) == (200, 1000, "close")
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()


async def test_a_failing_route_answers_500_and_the_connection_lives_on(server: Server) -> None:
    reader, writer = await server.connect()
    writer.write(request("/lane/fail", b"{}"))
    failed = await read_response(reader)
    assert (failed.status, failed.body) == (500, {"error": "internal error; see the service's log"})
    writer.write(request("/lane/after", b"{}"))
    assert (await read_response(reader)).body["route"] == "/lane/after"
    writer.close()


async def test_the_query_string_is_not_part_of_the_route(server: Server) -> None:
    reader, writer = await server.connect()
    writer.write(request("/lane/a?debug=1", b"{}"))
    assert (await read_response(reader)).body["route"] == "/lane/a"
    writer.close()
