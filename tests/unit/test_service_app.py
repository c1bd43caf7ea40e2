"""Every service app answers liveness, readiness (naming what is down) and Prometheus metrics."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.serving.app import create_app
from shared.settings import FlywheelSettings


def test_health_readiness_and_metrics_on_the_embedded_stand_ins(tmp_path: Path) -> None:
    settings = FlywheelSettings(data_dir=tmp_path, kafka_bootstrap=None, s3_endpoint=None, database_url=None)
    with TestClient(create_app(settings)) as client:
        assert client.get("/health/live").json() == {"status": "live", "service": "serving"}
        assert client.get("/health/ready").json() == {
            "ready": True,
            "checks": {"bus": True, "artifacts": True},
        }

        shutil.rmtree(tmp_path / "artifacts")
        not_ready = client.get("/health/ready")
        assert not_ready.status_code == 503
        assert not_ready.json()["checks"] == {"bus": True, "artifacts": False}

        metrics = client.get("/metrics").text
        assert 'route="/health/ready",service="serving",status="503"' in metrics
        assert 'route="/health/live"' in metrics


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="SCHED_BATCH is Linux's")
def test_serving_infers_on_threads_the_scheduler_treats_as_batch_work(tmp_path: Path) -> None:
    settings = FlywheelSettings(data_dir=tmp_path, kafka_bootstrap=None, s3_endpoint=None, database_url=None)
    app = create_app(settings)
    policy_here = os.sched_getscheduler(0)
    with TestClient(app):
        inference_thread = app.state.models.executor.submit(os.sched_getscheduler, 0).result()
    assert inference_thread == os.SCHED_BATCH
    assert os.sched_getscheduler(0) == policy_here  # other threads keep theirs
