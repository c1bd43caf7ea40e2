"""The model's ceiling: onnxruntime's `session.run` in this process on the same ONNX file, with the batch
service's session settings (shared.model_versions.session_options: intra-op threads = the service's
FLYWHEEL_BATCH_INTRA_OP_THREADS, default a thread per core, one inter-op thread, no spinning), on batches
of the service's size; no Kafka, no JSON."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnxruntime

from bench.serving.ceiling import InProcessFigure
from shared.model_versions import session_options

WARM_UP_CALLS = 5


def in_process_rows_per_second(
    onnx_path: Path, rows: np.ndarray, threads: int, seconds: float
) -> InProcessFigure:
    """Call the model on `rows` (one batch) over and over for `seconds`."""
    session = onnxruntime.InferenceSession(
        str(onnx_path), session_options(threads), providers=["CPUExecutionProvider"]
    )
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


def labels(onnx_path: Path, rows: np.ndarray) -> np.ndarray:
    """The model's label for each row, to check the service's results against."""
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.ascontiguousarray(rows, dtype=np.float32)}
    return np.asarray(session.run(["label"], feed)[0])
