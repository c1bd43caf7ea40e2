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

from bench.serving.loadgen import LoadResult, run_load
from bench.serving.workload import BenchModel

# A pause after each server's turn: what a server does after its load (flushing its prediction log,
# Kafka writing it) is not charged to the next one.
SETTLE_SECONDS = 1.0


@dataclass(frozen=True)
class Cell:
    rows: int
    concurrency: int

    @property
    def label(self) -> str:
        return f"{self.rows} row{'' if self.rows == 1 else 's'}, c={self.concurrency}"


@dataclass(frozen=True)
class Endpoint:
    """Where one server answers one model, and the body files it is sent (by rows per request)."""

    server: str
    model: str
    url: str
    bodies: dict[int, Path]


@dataclass(frozen=True)
class CellResult:
    server: str
    model: str
    cell: Cell
    load: LoadResult
    warm_up: LoadResult

    @property
    def requests_per_second(self) -> float:
        return self.load.requests_per_second

    @property
    def rows_per_second(self) -> float:
        return self.load.requests_per_second * self.cell.rows

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
    for model in models:
        for cell in cells:
            before_cell(model, cell)
            for server in servers[turn % len(servers) :] + servers[: turn % len(servers)]:
                endpoint = endpoints[server, model]
                body = endpoint.bodies[cell.rows]
                warm_up = run_load(endpoint.url, body, cell.concurrency, warm_up_seconds)
                load = run_load(endpoint.url, body, cell.concurrency, seconds)
                result = CellResult(server, model, cell, load, warm_up)
                results.append(result)
                on_result(result)
                time.sleep(SETTLE_SECONDS)
            turn += 1
    return results


def label_agreement(server: str, endpoint: Endpoint, model: BenchModel, rows: int) -> int | None:
    """How many of a `rows`-row request's labels agree with scikit-learn's; None for the bare ASGI app,
    which answers a constant."""
    if server == "bare":
        return None
    response = httpx.post(
        endpoint.url,
        content=endpoint.bodies[rows].read_bytes(),
        headers={"content-type": "application/json"},
        timeout=60.0,
    )
    response.raise_for_status()
    labels = [_label(prediction) for prediction in response.json()["predictions"]]
    return sum(int(got == expected) for got, expected in zip(labels, model.labels[:rows], strict=True))


def _label(prediction: Any) -> int:
    """MLflow answers bare labels; Flywheel and the hand-built app `{"label": ..., "probabilities": ...}`."""
    return int(prediction["label"] if isinstance(prediction, dict) else prediction)
