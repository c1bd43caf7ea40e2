"""`flywheel up` starts every service against the real servers; `flywheel status` sees them ready."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import Infrastructure
from tests.processes import REPO_ROOT, SERVICES, free_port


def flywheel(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "flywheel.cli", *arguments]


def test_up_starts_all_services_and_stops_them_on_sigterm(
    infrastructure: Infrastructure, tmp_path: Path
) -> None:
    ports = {f"FLYWHEEL_{service.upper()}_PORT": str(free_port()) for service in SERVICES}
    environment = {**os.environ, **infrastructure.environment(), **ports}
    log = tmp_path / "up.log"
    with log.open("wb") as log_file:
        up = subprocess.Popen(
            flywheel("up"), cwd=REPO_ROOT, env=environment, stdout=log_file, stderr=log_file
        )
    try:
        deadline = time.monotonic() + 90
        while b"Flywheel is up" not in log.read_bytes():
            assert up.poll() is None, f"flywheel up exited early: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"flywheel up not ready in 90s: {log.read_text()[-3000:]}"
            time.sleep(0.3)
        status = subprocess.run(
            flywheel("status"), cwd=REPO_ROOT, env=environment, capture_output=True, text=True
        )
        assert status.returncode == 0, status.stdout
        assert status.stdout.count(" ready") == len(SERVICES)
    finally:
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=60) == 0
    after = subprocess.run(flywheel("status"), cwd=REPO_ROOT, env=environment, capture_output=True, text=True)
    assert after.returncode == 1
    assert after.stdout.count("not answering") == len(SERVICES)
