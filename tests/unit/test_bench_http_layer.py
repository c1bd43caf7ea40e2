"""`bench/serving/http_layer.py` drives serving's HTTP protocol (`shared.http_protocol`) with fake
connections: a change there must not leave it silently broken."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "serving" / "http_layer.py"


def test_it_answers_with_both_layers_and_prints_their_cpu() -> None:
    command = [
        sys.executable,
        str(SCRIPT),
        "--rows",
        "2",
        "--connections",
        "2",
        "--seconds",
        "0.3",
        "--rounds",
        "1",
    ]

    completed = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)

    assert completed.returncode == 0, completed.stderr[-2000:]
    lines = completed.stdout.strip().splitlines()
    assert len(lines) == 3, lines
    for layer, line in zip(["uvicorn", "bare"], lines[:2], strict=True):
        assert re.fullmatch(rf"{layer}\s+[\d,]+ requests/s\s+[\d.]+ µs of event-loop CPU a request", line), (
            line
        )
    assert re.fullmatch(
        r"2 rows a request, 2 connections, best of 1: uvicorn [\d.]+ µs, bare [\d.]+ µs a request; "
        r"the layer's cost beyond the floor -?[\d.]+ µs",
        lines[-1],
    ), lines[-1]
