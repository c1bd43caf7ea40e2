"""The throughput benchmark's producer, a process of its own (pinned to the core the monitor does not use):
`prediction-logged` events as serving writes them, into the benchmark's topic.

    python -m bench.drift.producer fill   OUT.json --bootstrap B --topic T --events N [--rows R ...]
    python -m bench.drift.producer steady OUT.json --bootstrap B --topic T --rate P --seconds S [...]

`fill` sends N events as fast as it can (the backlog the monitor's top rate is measured on); `steady`
sends P predictions a second for S seconds, each event at its scheduled time. Every event holds `--rows`
predictions (2,000, serving's batch size) of `--request-rows`-row requests (1: 2,000 requests an event, as
serving logs 1-row requests), of the 5 features of tests/monitor_data.py (3 numeric, 2 categorical) without
shift, with a predicted `label` and `probabilities`; request ids are fresh (32 hex digits, as serving's),
timestamps are the time the event is built. The answer, written to OUT.json: events and predictions sent,
seconds, and how far behind its schedule a steady producer fell.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
from aiokafka import AIOKafkaProducer  # noqa: E402

from shared.prediction_events import logged_request, prediction_logged_json  # noqa: E402
from tests.monitor_data import FEATURES, NUMERIC, traffic  # noqa: E402

MODEL = "credit"
VERSION = 1
SOURCE = "/flywheel/serving"
POOL_SIZE = 8  # distinct tables of rows, used in turn (the rows' values cost nothing to vary)
MAX_IN_FLIGHT = 64  # events sent but not yet acknowledged, before `fill` waits for the oldest


class Events:
    """Event bodies: `POOL_SIZE` tables of rows (seeds unlike the reference's), fresh ids and times."""

    def __init__(self, rows: int, request_rows: int, seed: int = 100) -> None:
        if rows % request_rows:
            raise ValueError(f"{rows} rows do not split into requests of {request_rows}")
        self.rows = rows
        self.request_rows = request_rows
        self._rng = np.random.default_rng(seed)
        self._pool = [self._table(seed + index) for index in range(POOL_SIZE)]
        self._sent = 0

    def _table(self, seed: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        frame = traffic(self.rows, seed=seed)
        inputs: dict[str, np.ndarray] = {
            column: (
                frame[column].to_numpy(dtype=np.float64)
                if column in NUMERIC
                else frame[column].to_numpy(dtype=object)
            ).reshape(-1, 1)
            for column in FEATURES
        }
        probability = np.random.default_rng(seed).random(self.rows).astype(np.float32)
        outputs: dict[str, np.ndarray] = {
            "label": (probability > 0.7).astype(np.int64),
            "probabilities": np.column_stack([1 - probability, probability]),
        }
        return inputs, outputs

    def next(self) -> bytes:
        inputs, outputs = self._pool[self._sent % POOL_SIZE]
        self._sent += 1
        now = datetime.now(UTC)
        latencies = self._rng.uniform(0.3, 5.0, self.rows // self.request_rows).round(3)
        requests = [
            logged_request(os.urandom(16).hex(), self.request_rows, float(latency), now)
            for latency in latencies
        ]
        return prediction_logged_json(
            model=MODEL, version=VERSION, requests=requests, inputs=inputs, outputs=outputs, source=SOURCE
        )


def _producer(bootstrap: str) -> AIOKafkaProducer:
    """Serving's producer settings (shared/bus/kafka.py): acks=all, idempotent, linger 5 ms."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        client_id="bench-producer",
    )


async def fill(bootstrap: str, topic: str, events: Events, count: int) -> dict[str, Any]:
    producer = _producer(bootstrap)
    await producer.start()
    try:
        started = time.perf_counter()
        in_flight: list[asyncio.Future[Any]] = []
        size = 0
        for _ in range(count):
            value = events.next()
            size += len(value)
            in_flight.append(await producer.send(topic, value, key=MODEL.encode()))
            if len(in_flight) >= MAX_IN_FLIGHT:
                await in_flight.pop(0)
        await asyncio.gather(*in_flight)
        seconds = time.perf_counter() - started
    finally:
        await producer.stop()
    return {"events": count, "predictions": count * events.rows, "bytes": size, "seconds": seconds}


async def steady(bootstrap: str, topic: str, events: Events, rate: float, seconds: float) -> dict[str, Any]:
    producer = _producer(bootstrap)
    await producer.start()
    interval = events.rows / rate
    count = int(seconds / interval)
    size = 0
    behind = 0.0  # the most an event was sent after its scheduled time
    try:
        in_flight: list[asyncio.Future[Any]] = []
        started = time.perf_counter()
        for index in range(count):
            due = started + index * interval
            if (wait := due - time.perf_counter()) > 0:
                await asyncio.sleep(wait)
            behind = max(behind, time.perf_counter() - due)
            value = events.next()
            size += len(value)
            in_flight.append(await producer.send(topic, value, key=MODEL.encode()))
            for future in [future for future in in_flight if future.done()]:
                future.result()  # a failed send ends the run
                in_flight.remove(future)
        await asyncio.gather(*in_flight)
        elapsed = time.perf_counter() - started
    finally:
        await producer.stop()
    return {
        "events": count,
        "predictions": count * events.rows,
        "bytes": size,
        "seconds": elapsed,
        "rate": rate,
        "max_behind_seconds": behind,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=["fill", "steady"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--rows", type=int, default=2000, help="predictions per event")
    parser.add_argument("--request-rows", type=int, default=1, help="rows per logged request")
    parser.add_argument("--events", type=int, help="fill: events to send")
    parser.add_argument("--rate", type=float, help="steady: predictions per second")
    parser.add_argument("--seconds", type=float, help="steady: how long")
    arguments = parser.parse_args(argv)
    events = Events(arguments.rows, arguments.request_rows)
    if arguments.mode == "fill":
        answer = asyncio.run(fill(arguments.bootstrap, arguments.topic, events, arguments.events))
    else:
        answer = asyncio.run(
            steady(arguments.bootstrap, arguments.topic, events, arguments.rate, arguments.seconds)
        )
    arguments.out.write_text(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
