"""The monitor on the real servers: synthetic traffic without shift raises no alert over many windows;
shifted traffic is caught in the first window after the shift, alerts once per episode and asks for one
retrain; clean windows end the episode, and the next shift alerts again (within the retrain cool-down,
without a second request)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi import FastAPI

from services.monitor.app import create_app
from services.monitor.settings import MonitorSettings
from shared.artifacts import S3ArtifactStore
from shared.bus import KafkaBus
from shared.events import CloudEvent, DriftDetected, GroundTruth, RetrainRequested, Topic
from shared.prediction_events import logged_request, prediction_logged_json
from tests.conftest import Infrastructure
from tests.integration.conftest import KafkaBusFactory, fresh_namespace, registry_with_profiled_model
from tests.monitor_data import FEATURES, NUMERIC, traffic
from tests.waiting import eventually, eventually_true

WINDOW_ROWS = 1000
POLICY = {
    "drift": {"window": {"max_rows": WINDOW_ROWS, "max_seconds": None}},
    "alerts": {"recovery_windows": 2},
    "retrain": {"on_drift": True, "cooldown_seconds": 3600},
}


@dataclass
class Monitor:
    app: FastAPI
    client: httpx.AsyncClient
    bus: KafkaBus
    seen: dict[str, list[CloudEvent]]

    async def send(self, frame: pd.DataFrame, seed: int) -> list[tuple[str, int]]:
        """The frame as serving would log it: one columnar prediction-logged event per 500 rows; each
        row's request id and predicted label."""
        rng = np.random.default_rng(seed)
        answered: list[tuple[str, int]] = []
        for start in range(0, len(frame), 500):
            part = frame.iloc[start : start + 500]
            probabilities = rng.random(len(part))
            inputs = {
                column: (
                    part[column].to_numpy(dtype=np.float64)
                    if column in NUMERIC
                    else part[column].to_numpy(dtype=object)
                ).reshape(-1, 1)
                for column in FEATURES
            }
            event = prediction_logged_json(
                model="credit",
                version=1,
                requests=[logged_request(f"r-{seed}-{start}", len(part), 1.0, datetime.now(UTC))],
                inputs=inputs,
                outputs={
                    "label": (probabilities > 0.7).astype(np.int64),
                    "probabilities": np.column_stack([1 - probabilities, probabilities]),
                },
                source="/tests",
            )
            await self.bus.publish_raw(Topic.PREDICTION_LOGGED, event, key=b"credit")
            request_id = f"r-{seed}-{start}"
            answered += [
                (request_id if row == 0 else f"{request_id}:{row}", int(probability > 0.7))
                for row, probability in enumerate(probabilities)
            ]
        return answered

    async def label(self, answered: list[tuple[str, int]], *, right: bool) -> None:
        """Ground truth for each answer: what the model said, or the opposite."""
        for request_id, predicted in answered:
            truth = GroundTruth(
                request_id=request_id, label=predicted if right else 1 - predicted, model="credit"
            )
            await self.bus.publish(Topic.GROUND_TRUTH, CloudEvent.wrap(truth, source="/tests"), key="credit")

    async def reports(self) -> list[dict[str, Any]]:
        response = await self.client.get("/models/credit/reports", params={"page_size": 1000})
        assert response.status_code == 200, response.text
        reports: list[dict[str, Any]] = response.json()["reports"]
        return reports

    async def windows_judged(self, count: int) -> None:
        async def judged() -> bool:
            return len(await self.reports()) >= count

        await eventually_true(judged, within=60, what=f"{count} windows judged")

    async def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = (await self.client.get("/alerts", params={"model": "credit"})).json()[
            "alerts"
        ]
        return alerts


@pytest.fixture
async def monitor(
    infrastructure: Infrastructure,
    fresh_database_url: str,
    kafka_bus_factory: KafkaBusFactory,
    s3_store: S3ArtifactStore,
    tmp_path: Path,
) -> AsyncIterator[Monitor]:
    namespace = fresh_namespace()
    async with registry_with_profiled_model(
        infrastructure, fresh_database_url, namespace, s3_store, tmp_path
    ) as registry:
        settings = infrastructure.settings(
            database_url=fresh_database_url, kafka_namespace=namespace, s3_bucket="flywheel-tests"
        )
        app = create_app(settings, MonitorSettings(registry_url=registry.url, window_check_seconds=0.5))
        bus = await kafka_bus_factory(namespace=namespace)
        seen: dict[str, list[CloudEvent]] = {Topic.DRIFT_DETECTED: [], Topic.RETRAIN_REQUESTED: []}
        for topic, events in seen.items():

            async def collect(event: CloudEvent, events: list[CloudEvent] = events) -> None:
                events.append(event)

            await bus.subscribe(topic, f"observer-{uuid.uuid4().hex[:6]}", collect)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://monitor") as client,
        ):
            assert (await client.put("/models/credit/policy", json=POLICY)).status_code == 200
            yield Monitor(app, client, bus, seen)


async def test_drift_alerts_once_per_episode_and_asks_for_one_retrain(monitor: Monitor) -> None:
    clean_windows = 8
    await monitor.send(traffic(clean_windows * WINDOW_ROWS, seed=2), seed=2)
    await monitor.windows_judged(clean_windows)
    reports = await monitor.reports()
    assert not any(report["dataset_drift"] for report in reports), [r["drift_share"] for r in reports]
    assert await monitor.alerts() == []

    # The shift: caught by the first window that holds it, alerting once however long it lasts.
    await monitor.send(traffic(3 * WINDOW_ROWS, seed=3, mean_shift=1.0), seed=3)
    await monitor.windows_judged(clean_windows + 3)
    newest = (await monitor.reports())[:3]
    assert all(report["dataset_drift"] for report in newest)
    alerts = await monitor.alerts()
    assert len(alerts) == 1
    assert alerts[0]["closed_at"] is None
    assert alerts[0]["windows"] == 3
    await eventually(lambda: len(monitor.seen[Topic.DRIFT_DETECTED]) == 1, within=30, what="drift-detected")
    await eventually(
        lambda: len(monitor.seen[Topic.RETRAIN_REQUESTED]) == 1, within=30, what="retrain-requested"
    )
    alert = monitor.seen[Topic.DRIFT_DETECTED][0].payload_as(DriftDetected)
    assert (alert.model, alert.version, alert.window_rows) == ("credit", 1, WINDOW_ROWS)
    assert {drift.feature for drift in alert.features if drift.drifted} >= {"income", "age"}
    retrain = monitor.seen[Topic.RETRAIN_REQUESTED][0].payload_as(RetrainRequested)
    assert retrain.trigger_event_id == monitor.seen[Topic.DRIFT_DETECTED][0].id
    assert "income" in retrain.reason

    # Two clean windows end the episode; the next shift is a new episode with its own alert, and no
    # second retrain request within the cool-down.
    await monitor.send(traffic(2 * WINDOW_ROWS, seed=4), seed=4)
    await monitor.send(traffic(WINDOW_ROWS, seed=5, mean_shift=1.0), seed=5)
    await monitor.windows_judged(clean_windows + 6)
    alerts = await monitor.alerts()
    assert [alert["closed_at"] is None for alert in alerts] == [True, False]
    await eventually(lambda: len(monitor.seen[Topic.DRIFT_DETECTED]) == 2, within=30, what="a second alert")
    assert len(monitor.seen[Topic.RETRAIN_REQUESTED]) == 1

    status = (await monitor.client.get("/models/credit/status")).json()
    assert status["watched_versions"] == [{"version": 1, "open_window_rows": 0}]
    assert len(status["open_alerts"]) == 1
    history = (await monitor.client.get("/models/credit/features/income")).json()
    assert len(history) == clean_windows + 6
    assert [point["drifted"] for point in history[clean_windows : clean_windows + 3]] == [True, True, True]


async def test_a_policy_that_does_not_fit_the_features_is_refused(monitor: Monitor) -> None:
    await monitor.send(traffic(WINDOW_ROWS, seed=6), seed=6)
    await monitor.windows_judged(1)
    refused = await monitor.client.put(
        "/models/credit/policy", json={"drift": {"features": {"region": {"method": "ks"}}}}
    )
    assert refused.status_code == 422
    assert "region" in refused.json()["detail"]


async def test_ground_truth_tracks_accuracy_and_a_drop_is_concept_drift(monitor: Monitor) -> None:
    policy = {**POLICY, "performance": {"window_labels": 200, "max_drop": 0.1}}
    assert (await monitor.client.put("/models/credit/policy", json=policy)).status_code == 200
    answered = await monitor.send(traffic(WINDOW_ROWS, seed=7), seed=7)
    await monitor.windows_judged(1)  # the predictions are in: labels come after them, as in life
    await monitor.label(answered[:200], right=True)  # the baseline: every answer right
    await monitor.label(answered[200:400], right=False)  # then every answer wrong

    async def two_performance_windows() -> bool:
        timeline = (await monitor.client.get("/models/credit/timeline")).json()
        return len(timeline["performance"]) == 2

    await eventually_true(two_performance_windows, within=60, what="two performance windows")
    timeline = (await monitor.client.get("/models/credit/timeline")).json()
    first, second = timeline["performance"]
    assert (first["metric"], first["value"], first["dropped"]) == ("accuracy", 1.0, False)
    assert (second["value"], second["baseline"], second["dropped"]) == (0.0, 1.0, True)
    assert [alert["kind"] for alert in timeline["alerts"]] == ["performance"]
    await eventually(
        lambda: len(monitor.seen[Topic.DRIFT_DETECTED]) == 1, within=30, what="concept drift alert"
    )
    alert = monitor.seen[Topic.DRIFT_DETECTED][0].payload_as(DriftDetected)
    assert alert.features[0].feature == "accuracy"
    assert alert.severity == "critical"
    await eventually(
        lambda: len(monitor.seen[Topic.RETRAIN_REQUESTED]) == 1, within=30, what="retrain on the drop"
    )

    # Traffic minutes are written when the minute is over (or at shutdown): every row counted once.
    await monitor.app.state.monitor.flush_traffic(datetime.now(UTC), everything=True)
    minutes = (await monitor.client.get("/models/credit/timeline")).json()["traffic"]
    assert sum(minute["rows"] for minute in minutes) == WINDOW_ROWS
    assert minutes[0]["latency_ms"]["p50"] == 1.0
    assert sum(minutes[0]["confidence"]["counts"]) == minutes[0]["rows"]
