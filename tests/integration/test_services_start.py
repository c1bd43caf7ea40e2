"""Each service starts as `python -m services.<name>` against the real servers and reports ready."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.conftest import Infrastructure

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICES = ["registry", "trainer", "serving", "batch", "monitor"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until_ready(
    service: str, url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{service} exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{service} was not ready within {timeout}s: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def running_services(
    infrastructure: Infrastructure, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """All five services as separate processes, each ready; yields each one's base URL."""
    processes: dict[str, subprocess.Popen[bytes]] = {}
    urls: dict[str, str] = {}
    logs = {service: tmp_path_factory.mktemp("logs") / f"{service}.log" for service in SERVICES}
    for service in SERVICES:
        port = free_port()
        environment = {
            **os.environ,
            **infrastructure.environment(),
            f"FLYWHEEL_{service.upper()}_PORT": str(port),
        }
        with logs[service].open("wb") as log_file:  # the child keeps its own copy of the descriptor
            processes[service] = subprocess.Popen(
                [sys.executable, "-m", f"services.{service}"],
                cwd=REPO_ROOT,
                env=environment,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
            )
        urls[service] = f"http://127.0.0.1:{port}"
    try:
        for service, process in processes.items():
            wait_until_ready(service, urls[service], process, logs[service])
        yield urls
    finally:
        for process in processes.values():
            process.terminate()
        for service, process in processes.items():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                pytest.fail(f"{service} did not stop within 20s of SIGTERM")


@pytest.mark.parametrize("service", SERVICES)
async def test_service_reports_ready_and_exposes_metrics(
    running_services: dict[str, str], service: str
) -> None:
    url = running_services[service]
    async with httpx.AsyncClient() as client:
        ready = (await client.get(f"{url}/health/ready")).json()
        metrics = (await client.get(f"{url}/metrics")).text
        live = (await client.get(f"{url}/health/live")).json()
        openapi = (await client.get(f"{url}/openapi.json")).json()
    assert ready == {"ready": True, "checks": ready["checks"]}
    assert all(ready["checks"].values())
    assert live == {"status": "live", "service": service}
    assert (
        f'flywheel_http_requests_total{{method="GET",route="/health/ready",service="{service}",status="200"}}'
        in metrics
    )
    assert openapi["info"]["title"] == f"Flywheel {service}"


async def test_services_with_tables_migrate_their_own_schema(
    running_services: dict[str, str], infrastructure: Infrastructure
) -> None:
    connection = await asyncpg.connect(infrastructure.database_url)
    try:
        rows = await connection.fetch("SELECT schema_name FROM information_schema.schemata")
    finally:
        await connection.close()
    assert {"registry", "trainer", "batch", "monitor"} <= {row["schema_name"] for row in rows}
