"""The serving benchmark's target lines (`bench/serving/report.py`): a near miss must read as one."""

from __future__ import annotations

from bench.serving.ceiling import InProcessFigure
from bench.serving.loadgen import LoadResult
from bench.serving.measure import Cell, CellResult
from bench.serving.report import target_checks


def result(server: str, cell: Cell, requests_per_second: float, p99_ms: float) -> CellResult:
    load = LoadResult(10.0, {"200": int(requests_per_second * 10)}, {}, p99_ms / 3, p99_ms)
    return CellResult(server, "rf", cell, load, load, server_cpu_seconds=1.0, kafka_cpu_seconds=None)


def test_the_targets_pass_and_miss_with_the_figures_they_print() -> None:
    one_row, batch = Cell(rows=1, concurrency=64), Cell(rows=100, concurrency=16)
    results = [
        result("flywheel", one_row, 13_000, 14.9),
        result("handbuilt", one_row, 10_000, 12.0),
        result("flywheel", batch, 1_797, 20.0),  # 179,700 rows/s: 59.9% of the ceiling
    ]
    ceiling = {100: InProcessFigure(rows_per_call=100, calls=3_000, seconds=1.0)}

    ratio, p99, share = target_checks("rf", results, ceiling, 100, {})

    assert (ratio.passed, ratio.measured) == (True, "13,000 / 10,000 = 1.30x")
    assert (p99.passed, p99.measured) == (True, "14.9 ms")
    assert (share.passed, share.measured) == (False, "179,700 / 300,000 = 59.9% (c=16)")
    assert share.target == ">= 60%"
