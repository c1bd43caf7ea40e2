"""What a token check adds to serving's hot path (issue 9), measured in process against the same path
with access control off, in the same run.

Serving's inference routes call `shared.auth.authorize_scope` once a request. With access control off it
returns the anonymous principal; on, it reads the bearer token from the request's headers and looks it up
in the verifier's cache (the registry is asked once per token per FLYWHEEL_AUTH_CACHE_SECONDS). This
script times that call on a request's real ASGI scope, both ways, and the cache miss, whose cost is the
registry's round trip (stubbed here with a lookup that answers at once, so the figure is the Python
around it). No HTTP and no model: the figures are the check's own, to be read against the hot path's
~47 µs of CPU per 1-row request in process (bench/README.md).

    .venv/bin/python bench/serving/token_check.py [--calls 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from shared.auth import Authenticator, Permission, Principal, Role, TokenVerifier, authorize_scope

TOKEN = "fw_" + "x" * 43
PRINCIPAL = Principal(user="predictor-1", workspace="default", role=Role.PREDICTOR, token_id="t1")
ROUNDS = 5


def request_scope(authenticator: Authenticator) -> dict[str, Any]:
    """An inference request's scope as uvicorn hands it over, with a typical client's headers."""
    app = SimpleNamespace(state=SimpleNamespace(authenticator=authenticator))
    return {
        "type": "http",
        "method": "POST",
        "path": "/v1/models/credit:predict",
        "app": app,
        "headers": [
            (b"host", b"127.0.0.1:8080"),
            (b"user-agent", b"oha/1.4.5"),
            (b"accept", b"*/*"),
            (b"content-type", b"application/json"),
            (b"content-length", b"180"),
            (b"x-request-id", b"0f8fad5b-d9cb-469f-a165-70867728950e"),
            (b"authorization", f"Bearer {TOKEN}".encode()),
        ],
    }


async def answer_at_once(token: str) -> Principal | None:
    return PRINCIPAL if token == TOKEN else None


async def per_call_seconds(scope: dict[str, Any], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        await authorize_scope(scope, Permission.INFER)
    return (time.perf_counter() - started) / calls


async def cache_miss_seconds(calls: int) -> float:
    """A fresh verifier each call: the lookup and the caching around it."""
    started = time.perf_counter()
    for _ in range(calls):
        scope = request_scope(Authenticator(TokenVerifier(answer_at_once, ttl_seconds=5)))
        await authorize_scope(scope, Permission.INFER)
    return (time.perf_counter() - started) / calls


async def measure(calls: int) -> dict[str, float]:
    """The median over ROUNDS rounds of each case, in microseconds a call, the cases interleaved."""
    off = request_scope(Authenticator(None))
    on = request_scope(Authenticator(TokenVerifier(answer_at_once, ttl_seconds=3600)))
    await per_call_seconds(on, 1000)  # warm: the token is cached from here on
    rounds: dict[str, list[float]] = {"off": [], "cached token": [], "cache miss": []}
    for _ in range(ROUNDS):
        rounds["off"].append(await per_call_seconds(off, calls))
        rounds["cached token"].append(await per_call_seconds(on, calls))
        rounds["cache miss"].append(await cache_miss_seconds(calls // 10))
    return {case: statistics.median(seconds) * 1e6 for case, seconds in rounds.items()}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--calls", type=int, default=200_000, help="calls per case and round (default 200000)"
    )
    arguments = parser.parse_args(argv)
    figures = asyncio.run(measure(arguments.calls))
    print(f"serving's token check, in process, median of {ROUNDS} rounds of {arguments.calls:,} calls:")
    for case, microseconds in figures.items():
        print(f"  {case:<13} {microseconds:6.2f} µs a request")
    added = figures["cached token"] - figures["off"]
    print(f"  added by a cached token check: {added:.2f} µs a request (the baseline is access control off)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
