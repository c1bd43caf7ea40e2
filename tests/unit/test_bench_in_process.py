"""`bench/serving/in_process.py` still drives serving's real app: it reaches into the app's state (the model
store, the traffic policies, a version's batcher), so a change there must not leave it silently broken."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "serving" / "in_process.py"


@pytest.mark.parametrize("extra", [[], ["--fake-inference"], ["--no-fast-lane"]])
def test_it_answers_requests_and_prints_their_cpu(extra: list[str]) -> None:
    command = [sys.executable, str(SCRIPT), "--rows", "3", "--connections", "2", "--seconds", "0.5", *extra]

    completed = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)

    assert completed.returncode == 0, completed.stderr[-2000:]
    line = completed.stdout.strip().splitlines()[-1]
    figures = re.fullmatch(
        r"3 rows a request, 2 connections, 0\.5 s: ([\d,]+) requests/s; CPU a request \(µs\): "
        r"event loop [\d.]+ \(v1 reading [\d.]+, v1 answer [\d.]+, prediction-logged events [\d.]+\), "
        r"other threads [\d.]+ \((cached answers|onnxruntime's inference)\), all [\d.]+",
        line,
    )
    assert figures is not None, line
    assert int(figures[1].replace(",", "")) > 0
