"""Serving as several worker processes sharing one port: every worker swaps on model-promoted, and
/metrics sums what all of them counted."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Infrastructure
from tests.integration.conftest import fresh_namespace
from tests.models import tiny_classifier_onnx
from tests.processes import ServiceProcess
from tests.waiting import eventually_true

WORKERS = 2
INSTANCES = {"instances": [[0.1, 0.2, 0.3, 0.4]]}


@pytest.fixture
def services(
    infrastructure: Infrastructure, fresh_database_url: str, tmp_path: Path
) -> Iterator[tuple[str, str]]:
    environment = infrastructure.isolated_environment(fresh_database_url, fresh_namespace())
    registry = ServiceProcess("registry", environment, tmp_path / "registry.log").start()
    serving = None
    try:
        registry.wait_until_ready()
        serving = ServiceProcess(
            "serving",
            {
                **environment,
                "FLYWHEEL_SERVING_REGISTRY_URL": registry.url,
                "FLYWHEEL_SERVING_WORKERS": str(WORKERS),
            },
            tmp_path / "serving.log",
        ).start()
        serving.wait_until_ready()
        yield registry.url, serving.url
    finally:
        if serving is not None:
            serving.stop()
        registry.stop()


async def predict_on_new_connections(serving_url: str, requests: int) -> list[str]:
    """The answering versions, each request on a connection of its own, so that every worker gets some."""
    versions = []
    async with httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0)) as client:
        for _ in range(requests):
            response = await client.post(f"{serving_url}/v1/models/credit:predict", json=INSTANCES)
            assert response.status_code == 200, response.text
            versions.append(response.headers["X-Model-Version"])
    return versions


async def test_every_worker_swaps_and_metrics_sum_over_workers(services: tuple[str, str]) -> None:
    registry_url, serving_url = services
    async with httpx.AsyncClient(base_url=registry_url) as registry:
        for _ in range(2):
            uploaded = await registry.post("/models/credit/versions", files={"model": tiny_classifier_onnx()})
            assert uploaded.status_code == 201, uploaded.text
        await registry.put("/models/credit/aliases/production", json={"version": 1})
        assert set(await predict_on_new_connections(serving_url, 40)) == {"1"}

        await registry.put("/models/credit/aliases/production", json={"version": 2})

        # Each worker has its own consumer of model-promoted; once 40 fresh connections in a row (spread
        # over the workers by the kernel) are all answered by v2, every worker has swapped.
        async def all_on_v2() -> bool:
            return set(await predict_on_new_connections(serving_url, 40)) == {"2"}

        await eventually_true(
            all_on_v2,
            what="every worker answering with v2",
        )

        # A worker writes what its hot route counted at most a second later (shared.telemetry.PendingCounter).
        async def counts_summed_over_workers() -> bool:
            metrics = (await registry.get(f"{serving_url}/metrics")).text
            answered = sum(
                float(value)
                for value in re.findall(
                    r'^flywheel_serving_predictions_total\{model="credit".*\} (\S+)$', metrics, re.M
                )
            )
            http_counted = re.findall(
                r'^flywheel_http_requests_total\{.*route="/v1/models/\{name\}:predict".*\} (\S+)$',
                metrics,
                re.M,
            )
            return answered == sum(float(value) for value in http_counted) >= 80

        await eventually_true(counts_summed_over_workers, what="both workers' counts in /metrics")
