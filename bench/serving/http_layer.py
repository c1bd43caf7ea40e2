"""What uvicorn's HTTP layer costs a request on the event loop, against a bare httptools protocol: the part of
a request's cost that a path below ASGI for serving's inference routes would no longer pay (it would skip
serving's own ASGI layer for them too: bench/README.md, fourteenth session).

    .venv/bin/python bench/serving/http_layer.py [--rows 1] [--connections 32] [--seconds 3] [--rounds 3]

Both answer the same requests (`run.py`'s v1 bodies, `--rows` rows each) with the same constant JSON answer,
on uvloop, fed by fake connections in a closed loop as in `in_process.py` (no socket, no load generator):

- **uvicorn**: serving's protocol (`shared.http_protocol.ServiceHttpProtocol`, uvicorn's httptools protocol
  with its writes joined) in front of an ASGI app that reads the body and sends the answer in two
  messages, behind uvicorn's proxy-headers middleware, as serving runs its hot routes;
- **bare**: httptools' parser called straight from `data_received`, the body joined, and the answer written
  from a task of its own (a real handler would await its inference there), with nothing else: no ASGI
  scope or messages, no request cycle, no keep-alive or flow-control bookkeeping.

Prints requests/s and the event loop's CPU a request (its thread's CPU time over the answers), for each, in
turns (`--rounds`), and the difference. The bare protocol is a floor, not a server: it lacks what uvicorn
does for every request (pipelining, `Expect: 100-continue`, limits, timeouts, shutdown), so the difference
is more than a real server below ASGI would save of uvicorn's own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httptools
import orjson
import uvloop
from starlette.types import Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.server import ServerState

from bench.serving.in_process import Connection, requests_of
from shared.http_protocol import ServiceHttpProtocol

WARM_UP_SECONDS = 0.5
ANSWER = orjson.dumps(
    {
        "predictions": [{"label": 1, "probabilities": [0.2, 0.8]}],
        "model_name": "rf",
        "model_version": "1",
        "id": "0" * 32,
    }
)


async def constant_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The answer in two ASGI messages once the body is read, as serving's hot routes send theirs."""
    while (await receive()).get("more_body", False):
        pass
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-length", str(len(ANSWER)).encode()),
                (b"content-type", b"application/json"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": ANSWER})


class BareProtocol(asyncio.Protocol):
    """httptools' parser and a task per request; nothing else."""

    RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\ncontent-type: application/json\r\n\r\n%s" % (
        len(ANSWER),
        ANSWER,
    )

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.body: list[bytes] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body, self.body = b"".join(self.body), []
        asyncio.get_running_loop().create_task(self.answer(body))

    async def answer(self, body: bytes) -> None:
        assert self.transport is not None
        self.transport.write(self.RESPONSE)


def protocol_factory(layer: str) -> Callable[[], asyncio.Protocol]:
    if layer == "bare":
        return BareProtocol
    config = Config(
        constant_app, lifespan="off", loop="none", http="httptools", access_log=False, log_level="warning"
    )
    config.load()  # as uvicorn serves an app: behind its proxy-headers middleware
    state = ServerState()
    return lambda: ServiceHttpProtocol(config=config, server_state=state, app_state={})


async def measure(layer: str, requests: list[bytes], connections: int, seconds: float) -> tuple[float, float]:
    """(requests a second, the event loop's CPU µs a request)."""
    answered = 0

    def count() -> None:
        nonlocal answered
        answered += 1

    make = protocol_factory(layer)
    for connection in [Connection(make(), requests, count) for _ in range(connections)]:
        connection.send_next()
    await asyncio.sleep(WARM_UP_SECONDS)
    first, started, cpu_started = answered, time.perf_counter(), time.thread_time()
    await asyncio.sleep(seconds)
    cpu, elapsed = time.thread_time() - cpu_started, time.perf_counter() - started
    requests_answered = answered - first
    return requests_answered / elapsed, cpu / requests_answered * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1, help="rows a request body holds (default 1)")
    parser.add_argument("--connections", type=int, default=32, help="requests in flight (default 32)")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds measured a round (default 3)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each layer once a round (default 3)")
    arguments = parser.parse_args()
    requests = requests_of(arguments.rows)
    cpu: dict[str, list[float]] = {"uvicorn": [], "bare": []}
    for _ in range(arguments.rounds):
        for layer in cpu:
            rate, microseconds = uvloop.run(
                measure(layer, requests, arguments.connections, arguments.seconds)
            )
            cpu[layer].append(microseconds)
            print(
                f"{layer:8s} {rate:10,.0f} requests/s  {microseconds:6.1f} µs of event-loop CPU a request",
                flush=True,
            )
    best = {layer: min(figures) for layer, figures in cpu.items()}
    print(
        f"{arguments.rows} rows a request, {arguments.connections} connections, best of {arguments.rounds}: "
        f"uvicorn {best['uvicorn']:.1f} µs, bare {best['bare']:.1f} µs a request; "
        f"the layer's cost beyond the floor {best['uvicorn'] - best['bare']:.1f} µs"
    )


if __name__ == "__main__":
    main()
