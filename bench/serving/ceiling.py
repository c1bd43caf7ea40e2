"""The in-process ceiling: onnxruntime's `session.run` in a loop on the same ONNX file, with the session
settings of Flywheel's serving (intra-op threads = min(4, cores), one inter-op thread, all graph
optimisations), and no HTTP at all."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime

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


def in_process_rows_per_second(onnx_path: Path, rows: np.ndarray, seconds: float) -> InProcessFigure:
    """Call the model on `rows` (one batch) over and over for `seconds`."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = intra_op_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.ascontiguousarray(rows, dtype=np.float32)}
    for _ in range(WARM_UP_CALLS):
        session.run(None, feed)
    calls = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        session.run(None, feed)
        calls += 1
    return InProcessFigure(len(rows), calls, time.perf_counter() - started)
