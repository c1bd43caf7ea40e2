"""The in-process ceiling: onnxruntime's `session.run` in a loop on the same ONNX file and the same distinct
rows as the load (`workload.load_rows`), with the session settings of Flywheel's serving in one process
(intra-op threads = min(4, cores), one inter-op thread, all graph optimisations), and no HTTP at all.

Sampled at the start and again before every cell, so that a quiet moment is found even on a shared
machine: the best sample is the ceiling, and the spread between best and worst shows what others' work on
the machine cost while the servers were measured."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import onnxruntime

from bench.serving.workload import BenchModel

WARM_UP_CALLS = 50


@dataclass(frozen=True)
class InProcessFigure:
    rows_per_call: int
    calls: int
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return self.rows_per_call * self.calls / self.seconds

    @property
    def microseconds_per_call(self) -> float:
        return self.seconds / self.calls * 1e6


def intra_op_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


class InProcessCeiling:
    """`rows`: the distinct rows the load sends, called in consecutive slices as its bodies hold them."""

    def __init__(self, models: list[BenchModel], rows: np.ndarray, seconds: float) -> None:
        self.seconds = seconds
        self.rows = np.ascontiguousarray(rows, dtype=np.float32)
        self.samples: dict[tuple[str, int], list[InProcessFigure]] = {}
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = intra_op_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.sessions = {
            model.name: onnxruntime.InferenceSession(
                str(model.onnx_path), options, providers=["CPUExecutionProvider"]
            )
            for model in models
        }

    def sample(self, model: str, rows: int) -> InProcessFigure:
        """Call the model on the load's rows, `rows` at a time, one slice after the other for `seconds`."""
        session = self.sessions[model]
        name = session.get_inputs()[0].name
        starts = range(0, len(self.rows) - rows + 1, rows)
        feeds = [{name: self.rows[start : start + rows]} for start in starts]
        for feed in feeds[:WARM_UP_CALLS]:
            session.run(None, feed)
        calls = 0
        started = time.perf_counter()
        deadline = started + self.seconds
        while time.perf_counter() < deadline:
            session.run(None, feeds[calls % len(feeds)])
            calls += 1
        figure = InProcessFigure(rows, calls, time.perf_counter() - started)
        self.samples.setdefault((model, rows), []).append(figure)
        return figure

    def best(self, model: str) -> dict[int, InProcessFigure]:
        """The ceiling of each batch size: its best sample."""
        return {
            rows: max(figures, key=lambda f: f.rows_per_second)
            for (name, rows), figures in sorted(self.samples.items())
            if name == model
        }

    def worst(self, model: str) -> dict[int, InProcessFigure]:
        return {
            rows: min(figures, key=lambda f: f.rows_per_second)
            for (name, rows), figures in sorted(self.samples.items())
            if name == model
        }
