"""`flywheel up` starts every service against the real servers; `flywheel status` sees them ready."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import Infrastructure
from tests.processes import REPO_ROOT, SERVICES, free_port, start_flywheel_up


def flywheel(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "flywheel.cli", *arguments]


def test_up_starts_all_services_and_stops_them_on_sigterm(
    infrastructure: Infrastructure, tmp_path: Path
) -> None:
    ports = {f"FLYWHEEL_{service.upper()}_PORT": str(free_port()) for service in SERVICES}
    environment = {**os.environ, **infrastructure.environment(), **ports}
    up = start_flywheel_up(environment, tmp_path / "up.log", timeout=90)
    try:
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
