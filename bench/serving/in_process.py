"""Serving in one process without sockets: what a request costs the event loop and the inference thread.

    .venv/bin/python bench/serving/in_process.py [--rows 100] [--connections 8] [--seconds 5]
                                                 [--fake-inference] [--no-fast-lane] [--profile]

Serving's own app (`create_app`, embedded: local artifacts, the in-memory bus, access control off) behind
uvicorn's HTTP protocol as serving runs it (`shared.http_protocol.ServiceHttpProtocol`, uvloop), holding
the benchmark's random forest (`bench.serving.workload`: the same ONNX file, the same distinct rows, the
same v1 bodies as `run.py` sends). `--connections` fake connections feed the protocol bytes in a closed
loop: each answer sends that connection's next request. No socket, no load generator and no Kafka
broker share the cores, so what is printed is the service's own CPU a request: its event loop's (with the
v1 reading, the v1 answer and the prediction-logged events apart) and its other threads' (onnxruntime's
inference), from /proc at the start and the end of the measured seconds.

The inference routes are answered by the protocol's fast lane, as serving runs them; `--no-fast-lane`
sends them through the ASGI app instead (`FLYWHEEL_SERVING_FAST_LANE=false`), to compare the two.
`--fake-inference` answers every call from a cache of one real answer per call size: the event loop's cost
with no onnxruntime working beside it. `--profile` prints cProfile's busiest functions of the event loop
(cProfile about doubles the loop's CPU; read the shares, not the figures).

The machine's drift moves these figures too (this project's 2-vCPU hosts: 20% from one minute to the next),
so compare two versions in turns, several times each.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import pstats
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import uvloop
from uvicorn.config import Config
from uvicorn.lifespan.on import LifespanOn
from uvicorn.server import ServerState

import services.serving.prediction_log as prediction_log
import services.serving.service as service
from bench.common.cpu import thread_cpu_seconds
from bench.serving.workload import build_models, instances_body, load_rows
from services.registry.onnx_inspection import inspect_model
from services.serving.app import create_app
from services.serving.settings import ServingSettings
from shared.http_protocol import ServiceHttpProtocol
from shared.model_versions import VersionRecord
from shared.settings import FlywheelSettings
from shared.tensors import Tensors

MODEL = "rf"
WARM_UP_SECONDS = 2.0
# The stages timed apart: the module whose global each is looked up in when serving calls it, and its name.
STAGES = {
    "v1 reading": (service, "parse_v1_instances"),
    "v1 answer": (service, "encode_v1_predictions"),
    "prediction-logged events": (prediction_log, "encode_batch"),
}


def requests_of(rows: int) -> list[bytes]:
    """Whole HTTP requests, one per slice of `rows` distinct rows, as `run.py`'s load sends them."""
    data = load_rows()
    requests = []
    for start in range(0, len(data) - rows + 1, rows):
        body = instances_body(data[start : start + rows])
        head = (
            f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        )
        requests.append(head.encode() + body)
    return requests


class Connection(asyncio.Transport):
    """A client connection without a socket: `protocol` writes its answers here, and once one is whole
    (a 200: anything else stops the run) the next request is fed to it."""

    def __init__(self, protocol: asyncio.Protocol, requests: list[bytes], answered: Callable[[], None]):
        super().__init__()
        self.requests = requests
        self.answered = answered
        self.received = bytearray()
        self.stopped = False
        self.protocol = protocol
        self.protocol.connection_made(self)

    def send_next(self) -> None:
        if not self.stopped:
            self.protocol.data_received(random.choice(self.requests))

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.received += data
        head, separator, body = bytes(self.received).partition(b"\r\n\r\n")
        if not separator:
            return
        length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
        if len(body) < length:
            return
        if not head.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"serving answered {bytes(self.received[:500])!r}")
        self.received.clear()
        self.answered()
        asyncio.get_running_loop().call_soon(self.send_next)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        self.stopped = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def time_stages(spent: dict[str, float]) -> None:
    """Wrap each stage's function where serving looks it up, adding its event-loop CPU to `spent`."""
    for stage, (module, name) in STAGES.items():
        function = getattr(module, name)

        def timed(
            *args: Any, _function: Callable[..., Any] = function, _stage: str = stage, **kwargs: Any
        ) -> Any:
            started = time.thread_time()
            try:
                return _function(*args, **kwargs)
            finally:
                spent[_stage] = spent.get(_stage, 0.0) + time.thread_time() - started

        setattr(module, name, timed)


def cached_inference(infer: Callable[[Tensors], Tensors]) -> Callable[[Tensors], Tensors]:
    """`infer`, called once per call size; every later call of that size gets the same answer."""
    answers: dict[int, Tensors] = {}

    def answer(inputs: Tensors) -> Tensors:
        rows = len(next(iter(inputs.values())))
        if rows not in answers:
            answers[rows] = infer(inputs)
        return answers[rows]

    return answer


async def measure(arguments: argparse.Namespace, directory: Path) -> None:
    model = build_models([MODEL], arguments.rows, directory)[0]
    onnx = model.onnx_path.read_bytes()
    settings = FlywheelSettings(
        data_dir=directory / "data",
        kafka_bootstrap=None,
        s3_endpoint=None,
        database_url=None,
        auth_enabled=False,
    )
    app = create_app(settings, ServingSettings(fast_lane=not arguments.no_fast_lane))
    config = Config(app, lifespan="on", loop="none", http="httptools", access_log=False, log_level="warning")
    config.load()  # as uvicorn serves it: the app behind uvicorn's proxy-headers middleware
    lifespan = LifespanOn(config)
    await lifespan.startup()
    try:
        # The registry, stood in for: the model's one version behind `production`, no traffic policy.
        models, traffic = app.state.models, app.state.inference.traffic
        key = f"bench/{MODEL}.onnx"
        await models.artifacts.put_bytes(key, onnx)
        record = VersionRecord(
            MODEL, 1, models.artifacts.uri(key), hashlib.sha256(onnx).hexdigest(), inspect_model(onnx)
        )

        async def describe_version(name: str, version: int | None, alias: str | None) -> VersionRecord:
            return record

        async def no_policy(name: str) -> None:
            return None

        models.describe_version = describe_version
        traffic.fetch_policy = no_policy
        loaded = await models.resolve(MODEL)
        if arguments.fake_inference:
            loaded.batcher.infer = cached_inference(loaded.batcher.infer)
        await run_connections(arguments, config, lifespan.state)
    finally:
        await lifespan.shutdown()


async def run_connections(arguments: argparse.Namespace, config: Config, app_state: dict[str, Any]) -> None:
    answered = 0

    def count() -> None:
        nonlocal answered
        answered += 1

    bodies = requests_of(arguments.rows)
    connections = [
        Connection(
            ServiceHttpProtocol(config=config, server_state=ServerState(), app_state=app_state), bodies, count
        )
        for _ in range(arguments.connections)
    ]
    spent: dict[str, float] = {}
    time_stages(spent)
    for connection in connections:
        connection.send_next()
    await asyncio.sleep(WARM_UP_SECONDS)

    loop_thread = threading.get_native_id()
    spent.clear()
    profile = cProfile.Profile() if arguments.profile else None
    before, first = thread_cpu_seconds(), answered
    started, loop_started = time.perf_counter(), time.thread_time()
    if profile:
        profile.enable()
    await asyncio.sleep(arguments.seconds)
    if profile:
        profile.disable()
    loop_seconds, after = time.thread_time() - loop_started, thread_cpu_seconds()
    requests, elapsed = answered - first, time.perf_counter() - started
    for connection in connections:
        connection.close()
    await asyncio.sleep(0.5)  # the answers in flight

    others = sum(
        seconds - before.get(thread, 0.0) for thread, seconds in after.items() if thread != loop_thread
    )
    per_request = 1e6 / requests
    stages = ", ".join(f"{stage} {spent.get(stage, 0.0) * per_request:.1f}" for stage in STAGES)
    inference = "cached answers" if arguments.fake_inference else "onnxruntime's inference"
    print(
        f"{arguments.rows} rows a request, {arguments.connections} connections, {arguments.seconds:g} s: "
        f"{requests / elapsed:,.0f} requests/s; CPU a request (µs): "
        f"event loop {loop_seconds * per_request:.1f} ({stages}), "
        f"other threads {others * per_request:.1f} ({inference}), "
        f"all {(loop_seconds + others) * per_request:.1f}"
    )
    if profile:
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100, help="rows a request (default 100)")
    parser.add_argument("--connections", type=int, default=8, help="requests in flight (default 8)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds measured (default 5)")
    parser.add_argument("--fake-inference", action="store_true", help="answer from a cache, not onnxruntime")
    parser.add_argument(
        "--no-fast-lane", action="store_true", help="the inference routes through ASGI, not the protocol"
    )
    parser.add_argument(
        "--profile", action="store_true", help="print cProfile's busiest functions of the loop"
    )
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flywheel-serving-in-process-") as directory:
        uvloop.run(measure(arguments, Path(directory)))


if __name__ == "__main__":
    main()
