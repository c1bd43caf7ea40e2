"""The measurement: every server under the same load, cell by cell (rows per request x concurrency), one
server at a time while the others idle, in turns so that background work on the machine weighs on all
alike; and a check that each server's answers agree with scikit-learn."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.common.cpu import cpu_seconds, kafka_broker, process_group
from bench.serving.loadgen import LoadResult, run_load
from bench.serving.workload import BenchModel

# A pause after each server's turn: what a server does after its load (flushing its prediction log,
# Kafka writing it) is not charged to the next one.
SETTLE_SECONDS = 1.0
# A server's process that used less CPU than this in a cell is not one of its serving workers (uvicorn's
# supervisor, say).
BUSY_CPU_SECONDS = 0.05


@dataclass(frozen=True)
class Cell:
    rows: int
    concurrency: int

    @property
    def label(self) -> str:
        return f"{self.rows} row{'' if self.rows == 1 else 's'}, c={self.concurrency}"


@dataclass(frozen=True)
class Endpoint:
    """Where one server answers one model, the body files it is sent (by rows per request), and the process
    group of the server that answers (its workers' CPU is counted)."""

    server: str
    model: str
    url: str
    bodies: dict[int, Path]
    process_group: int


@dataclass(frozen=True)
class CellResult:
    server: str
    model: str
    cell: Cell
    load: LoadResult
    warm_up: LoadResult
    server_cpu_seconds: float  # the server's processes, during the measurement
    kafka_cpu_seconds: float | None  # the local Kafka broker's (None: no broker on this machine)
    # Cores each busy process of the server used, most first: the workers share one listening socket, and
    # a cell's connections can land unevenly on them (16 on one worker leaves the other's core idle).
    worker_cores: tuple[float, ...] = ()

    @property
    def requests_per_second(self) -> float:
        return self.load.requests_per_second

    @property
    def rows_per_second(self) -> float:
        return self.load.requests_per_second * self.cell.rows

    @property
    def server_cpu_per_request_us(self) -> float | None:
        """The server's CPU a request answered: it moves far less than req/s when others share the cores
        (they make a server wait for a core, not work more)."""
        return self.server_cpu_seconds / self.load.ok * 1e6 if self.load.ok else None

    @property
    def kafka_cpu_per_request_us(self) -> float | None:
        """The broker's CPU a request answered: Flywheel's prediction log is written there."""
        if self.kafka_cpu_seconds is None or not self.load.ok:
            return None
        return self.kafka_cpu_seconds / self.load.ok * 1e6

    @property
    def answered_rows(self) -> int:
        """Rows answered with a 2xx in the warm-up and the measurement."""
        return (self.warm_up.ok + self.load.ok) * self.cell.rows


def run_cells(
    endpoints: dict[tuple[str, str], Endpoint],
    servers: list[str],
    models: list[str],
    cells: list[Cell],
    seconds: float,
    warm_up_seconds: float,
    before_cell: Callable[[str, Cell], None],
    on_result: Callable[[CellResult], None],
) -> list[CellResult]:
    """Each model, each cell: `before_cell`, then each server in turn (who goes first rotates from cell
    to cell): a warm-up at the cell's concurrency, the measurement, then `on_result` (what it waits for is
    not charged to the next server either) and a pause."""
    results = []
    turn = 0
    broker, _ = kafka_broker()
    for model in models:
        for cell in cells:
            before_cell(model, cell)
            for server in servers[turn % len(servers) :] + servers[: turn % len(servers)]:
                endpoint = endpoints[server, model]
                bodies = endpoint.bodies[cell.rows]
                warm_up = run_load(endpoint.url, bodies, cell.concurrency, warm_up_seconds)
                server_before = _process_cpu_seconds(endpoint.process_group)
                kafka_before = _broker_cpu_seconds(broker)
                load = run_load(endpoint.url, bodies, cell.concurrency, seconds)
                kafka_after = _broker_cpu_seconds(broker)
                server_used = _used_by_process(server_before, _process_cpu_seconds(endpoint.process_group))
                kafka_used = _used(kafka_before, kafka_after)
                result = CellResult(
                    server,
                    model,
                    cell,
                    load,
                    warm_up,
                    sum(server_used),
                    kafka_used,
                    tuple(used / load.seconds for used in server_used if used >= BUSY_CPU_SECONDS),
                )
                results.append(result)
                on_result(result)
                time.sleep(SETTLE_SECONDS)
            turn += 1
    return results


def _process_cpu_seconds(group: int) -> dict[int, float]:
    return {pid: seconds for pid in process_group(group) if (seconds := cpu_seconds(pid)) is not None}


def _used_by_process(before: dict[int, float], after: dict[int, float]) -> list[float]:
    """CPU seconds each process used in between, most first (a process started meanwhile: all of its)."""
    return sorted((seconds - before.get(pid, 0.0) for pid, seconds in after.items()), reverse=True)


def _broker_cpu_seconds(broker: int | None) -> float | None:
    return None if broker is None else cpu_seconds(broker)


def _used(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def label_agreement(server: str, endpoint: Endpoint, model: BenchModel, rows: int) -> int | None:
    """How many of a `rows`-row request's labels agree with scikit-learn's; None for the bare ASGI app,
    which answers a constant."""
    if server == "bare":
        return None
    response = httpx.post(
        endpoint.url,
        content=endpoint.bodies[rows].read_bytes().split(b"\n", 1)[0],  # the held-out rows
        headers={"content-type": "application/json"},
        timeout=60.0,
    )
    response.raise_for_status()
    labels = [_label(prediction) for prediction in response.json()["predictions"]]
    return sum(int(got == expected) for got, expected in zip(labels, model.labels[:rows], strict=True))


def _label(prediction: Any) -> int:
    """MLflow answers bare labels; Flywheel and the hand-built app `{"label": ..., "probabilities": ...}`."""
    return int(prediction["label"] if isinstance(prediction, dict) else prediction)
