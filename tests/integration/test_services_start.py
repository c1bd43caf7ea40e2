"""Each service starts as `python -m services.<name>` against the real servers and reports ready."""

from __future__ import annotations

from collections.abc import Iterator

import asyncpg
import httpx
import pytest

from tests.conftest import Infrastructure
from tests.processes import SERVICES, ServiceProcess


@pytest.fixture(scope="module")
def running_services(
    infrastructure: Infrastructure, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """All five services as separate processes, each ready; yields each one's base URL."""
    logs = tmp_path_factory.mktemp("logs")
    processes = [
        ServiceProcess(service, infrastructure.environment(), logs / f"{service}.log").start()
        for service in SERVICES
    ]
    try:
        for process in processes:
            process.wait_until_ready()
        yield {process.service: process.url for process in processes}
    finally:
        for process in processes:
            process.stop()


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
