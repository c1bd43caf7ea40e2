"""The closed loop on the real servers, with the five services as separate processes and two serving
replicas: train v1 -> registered -> promoted to production -> both replicas answer from v1 -> predictions
logged -> clean traffic raises nothing -> shifted traffic -> drift-detected -> retrain-requested -> the
trainer trains v2 on newer data -> its gate beats v1 -> v2 promoted -> both replicas answer from v2.
No person in the middle: after the first job and the monitor's policy, the test only sends traffic."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pandas as pd
import pytest

from flywheel.demo_data import FEATURES, credit_risk_frame, shifted_credit_frame
from shared.events import (
    CloudEvent,
    DriftDetected,
    ModelPromoted,
    ModelRegistered,
    PredictionLogged,
    RetrainRequested,
    RunCompleted,
    Topic,
)
from tests.integration.conftest import KafkaBusFactory, PlatformFactory
from tests.processes import Platform
from tests.waiting import eventually, eventually_true

MODEL = "credit-risk"
TRAINING_ROWS = 6000  # over 1,000 reference values: the monitor's distance tests, stable on clean windows
WINDOW_ROWS = 500
ROWS_PER_REQUEST = 50
OBSERVED = [
    Topic.RUN_COMPLETED,
    Topic.MODEL_REGISTERED,
    Topic.MODEL_PROMOTED,
    Topic.PREDICTION_LOGGED,
    Topic.DRIFT_DETECTED,
    Topic.RETRAIN_REQUESTED,
]


def instances(frame: pd.DataFrame) -> list[list[dict[str, Any]]]:
    """Request bodies' instances (objects of named features), ROWS_PER_REQUEST rows each."""
    records: list[dict[str, Any]] = frame[FEATURES].to_dict(orient="records")
    return [records[start : start + ROWS_PER_REQUEST] for start in range(0, len(records), ROWS_PER_REQUEST)]


def traffic(frame: pd.DataFrame, rows: int) -> pd.DataFrame:
    """`rows` complete rows (serving refuses missing values: a caller imputes them)."""
    complete = frame.dropna().head(rows)
    assert len(complete) == rows
    return complete


@dataclass
class Loop:
    registry: httpx.AsyncClient
    trainer: httpx.AsyncClient
    monitor: httpx.AsyncClient
    batch: httpx.AsyncClient
    servings: list[httpx.AsyncClient]
    seen: dict[str, list[CloudEvent]]
    platform: Platform
    sent: dict[str, int] = field(default_factory=dict)  # request id -> rows, of the traffic the test sent
    timeline: list[tuple[str, float]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def step(self, what: str) -> None:
        self.timeline.append((what, round(time.monotonic() - self.started, 1)))

    def payloads(self, topic: str, kind: Any) -> list[Any]:
        return [event.payload_as(kind) for event in self.seen[topic]]

    async def upload(self, frame: pd.DataFrame) -> str:
        response = await self.trainer.post(
            "/datasets", params={"filename": "credit.csv"}, content=frame.to_csv(index=False).encode()
        )
        assert response.status_code == 201, response.text
        return str(response.json()["uri"])

    async def production(self) -> int | None:
        response = await self.registry.get(f"/models/{MODEL}/aliases/production")
        return int(response.json()["version"]) if response.status_code == 200 else None

    async def answering_versions(self, serving: httpx.AsyncClient, frame: pd.DataFrame) -> set[str]:
        versions = set()
        for body in instances(frame):
            response = await serving.post(f"/v1/models/{MODEL}:predict", json={"instances": body})
            assert response.status_code == 200, response.text
            assert len(response.json()["predictions"]) == len(body)
            versions.add(response.headers["X-Model-Version"])
        return versions

    async def serve(self, frame: pd.DataFrame, tag: str) -> list[set[str]]:
        """Send the frame through both replicas in turn, ROWS_PER_REQUEST rows a request, each with a
        request id naming its replica; the versions that answered, per replica."""
        versions: list[set[str]] = [set() for _ in self.servings]
        for index, body in enumerate(instances(frame)):
            replica = index % len(self.servings)
            request_id = f"{tag}-replica{replica + 1}-{index}"
            response = await self.servings[replica].post(
                f"/v1/models/{MODEL}:predict", json={"instances": body}, headers={"X-Request-Id": request_id}
            )
            assert response.status_code == 200, response.text
            assert len(response.json()["predictions"]) == len(body)
            versions[replica].add(response.headers["X-Model-Version"])
            self.sent[request_id] = len(body)
        return versions

    async def reports(self) -> list[dict[str, Any]]:
        response = await self.monitor.get(f"/models/{MODEL}/reports", params={"page_size": 1000})
        assert response.status_code == 200, response.text
        reports: list[dict[str, Any]] = response.json()["reports"]
        return reports

    async def windows_judged(self, count: int, within: float = 30) -> list[dict[str, Any]]:
        async def judged() -> bool:
            return len(await self.reports()) >= count

        await eventually_true(judged, within=within, what=f"{count} monitor windows judged")
        return await self.reports()

    async def alerts(self) -> list[dict[str, Any]]:
        response = await self.monitor.get("/alerts", params={"model": MODEL})
        assert response.status_code == 200, response.text
        alerts: list[dict[str, Any]] = response.json()["alerts"]
        return alerts

    async def jobs(self) -> list[dict[str, Any]]:
        response = await self.trainer.get("/jobs", params={"model": MODEL})
        assert response.status_code == 200, response.text
        jobs: list[dict[str, Any]] = response.json()["jobs"]
        return jobs


@pytest.fixture
async def loop(platform_factory: PlatformFactory, kafka_bus_factory: KafkaBusFactory) -> AsyncIterator[Loop]:
    platform = await platform_factory(
        servings=2,  # two replicas of one worker each on two cores
        environment={"FLYWHEEL_MONITOR_WINDOW_CHECK_SECONDS": "0.5", "FLYWHEEL_SERVING_WORKERS": "1"},
    )
    bus = await kafka_bus_factory(namespace=platform.namespace)
    seen: dict[str, list[CloudEvent]] = {topic: [] for topic in OBSERVED}
    group = f"observer-{uuid.uuid4().hex[:6]}"
    for topic, events in seen.items():

        async def collect(event: CloudEvent, events: list[CloudEvent] = events) -> None:
            events.append(event)

        await bus.subscribe(topic, group, collect)

    serving_1, serving_2 = platform.servings
    async with (
        httpx.AsyncClient(base_url=platform.registry.url, timeout=30) as registry_client,
        httpx.AsyncClient(base_url=platform.trainer.url, timeout=30) as trainer_client,
        httpx.AsyncClient(base_url=platform.monitor.url, timeout=30) as monitor_client,
        httpx.AsyncClient(base_url=platform.batch.url, timeout=30) as batch_client,
        httpx.AsyncClient(base_url=serving_1.url, timeout=30) as serving_1_client,
        httpx.AsyncClient(base_url=serving_2.url, timeout=30) as serving_2_client,
    ):
        yield Loop(
            registry_client,
            trainer_client,
            monitor_client,
            batch_client,
            [serving_1_client, serving_2_client],
            seen,
            platform,
        )


async def test_drift_retrains_gates_promotes_and_hot_swaps_both_replicas(loop: Loop) -> None:
    try:
        await closed_loop(loop)
    except BaseException:
        print("\n".join(f"{seconds:6.1f} s  {what}" for what, seconds in loop.timeline))
        print(loop.platform.log_tails())
        raise


async def closed_loop(loop: Loop) -> None:
    # v1: a training job whose promotion policy the monitor's retrains inherit (the trainer retrains with
    # the configuration of the production version's run).
    v1_data = await loop.upload(credit_risk_frame(TRAINING_ROWS, seed=0))
    newer_data = await loop.upload(shifted_credit_frame(TRAINING_ROWS, seed=10))
    submitted = await loop.trainer.post(
        "/jobs",
        json={
            "dataset_uri": v1_data,
            "target": "default",
            "task": "classification",
            "estimator": "logistic_regression",
            "model_name": MODEL,
            "feature_columns": FEATURES,
            "promotion": {"champion_alias": "production", "promote_to": "production", "min_improvement": 0},
        },
    )
    assert submitted.status_code == 201, submitted.text
    v1_job_id = submitted.json()["id"]

    async def production_is(version: int) -> bool:
        return await loop.production() == version

    await eventually_true(lambda: production_is(1), within=60, what="v1 trained, registered and promoted")
    loop.step("v1 trained, registered, promoted to production")
    v1_job = next(job for job in await loop.jobs() if job["id"] == v1_job_id)
    assert v1_job["status"] == "succeeded", v1_job
    assert v1_job["result"]["gate"]["promoted"] is True
    assert v1_job["result"]["gate"]["champion_version"] is None
    v1 = (await loop.registry.get(f"/models/{MODEL}/versions/1")).json()
    assert v1["source_run_id"] == v1_job["run_id"]
    assert v1["reference_profile_uri"]
    assert v1["tags"]["gate.decision"] == "promoted"

    policy = {
        "drift": {"window": {"max_rows": WINDOW_ROWS, "max_seconds": None}},
        "alerts": {"recovery_windows": 2},
        "retrain": {"on_drift": True, "cooldown_seconds": 0, "dataset_uri": newer_data},
    }
    response = await loop.monitor.put(f"/models/{MODEL}/policy", json=policy)
    assert response.status_code == 200, response.text

    # Both replicas answer from v1; clean traffic through them is watched without an alert.
    clean = traffic(credit_risk_frame(3 * WINDOW_ROWS, seed=1), 2 * WINDOW_ROWS)
    started = time.monotonic()
    assert await loop.serve(clean, "clean") == [{"1"}, {"1"}]
    rate = len(clean) / (time.monotonic() - started)
    loop.step(f"{len(clean)} clean predictions served by both replicas from v1 ({rate:.0f} rows/s)")
    reports = await loop.windows_judged(2)
    assert not any(report["dataset_drift"] for report in reports), reports
    assert await loop.alerts() == []
    loop.step("2 clean windows judged, no alert")

    # The shift: the next window drifts, the monitor alerts and asks for a retrain on the newer data.
    shifted = traffic(shifted_credit_frame(2 * WINDOW_ROWS, seed=11), 2 * WINDOW_ROWS)
    assert await loop.serve(shifted, "shifted") == [{"1"}, {"1"}]
    loop.step(f"{len(shifted)} shifted predictions served")
    await eventually(lambda: bool(loop.seen[Topic.DRIFT_DETECTED]), within=30, what="drift-detected")
    loop.step("drift detected")
    alert = loop.payloads(Topic.DRIFT_DETECTED, DriftDetected)[0]
    assert (alert.model, alert.version, alert.window_rows) == (MODEL, 1, WINDOW_ROWS)
    assert alert.dataset_drift
    drifted = {feature.feature for feature in alert.features if feature.drifted}
    assert len(drifted & set(FEATURES)) >= 2, alert.features
    alerts = await loop.alerts()
    assert [alert["closed_at"] for alert in alerts] == [None], alerts
    await eventually(lambda: bool(loop.seen[Topic.RETRAIN_REQUESTED]), within=30, what="retrain-requested")
    retrain = loop.payloads(Topic.RETRAIN_REQUESTED, RetrainRequested)[0]
    assert (retrain.model, retrain.dataset_uri) == (MODEL, newer_data)
    assert retrain.trigger_event_id == loop.seen[Topic.DRIFT_DETECTED][0].id
    loop.step("retrain requested")
    reports = await loop.windows_judged(4)  # newest first: both shifted windows drift, the clean ones not
    assert [report["dataset_drift"] for report in reports] == [True, True, False, False], reports

    # The trainer retrains on the newer data; its gate compares v2 with v1 on v2's holdout and promotes.
    await eventually_true(lambda: production_is(2), within=60, what="v2 trained, gated and promoted")
    loop.step("v2 trained, won the gate, promoted to production")
    jobs = await loop.jobs()
    assert len(jobs) == 2, jobs
    v2_job = next(job for job in jobs if job["id"] != v1_job_id)
    assert v2_job["status"] == "succeeded", v2_job
    assert v2_job["request"]["dataset_uri"] == newer_data
    assert v2_job["request"]["promotion"]["promote_to"] == "production"
    gate = v2_job["result"]["gate"]
    assert (gate["promoted"], gate["champion_version"]) == (True, 1), gate
    assert gate["challenger"] >= gate["champion"], gate
    v2 = (await loop.registry.get(f"/models/{MODEL}/versions/2")).json()
    assert v2["source_run_id"] == v2_job["run_id"]
    assert v2["tags"]["gate.decision"] == "promoted"

    # Both replicas swap to v2 on model-promoted, with no restart.
    for serving in loop.servings:

        async def answers_from_v2(serving: httpx.AsyncClient = serving) -> bool:
            return await loop.answering_versions(serving, shifted.head(ROWS_PER_REQUEST)) == {"2"}

        await eventually_true(answers_from_v2, within=30, what="a serving replica answering from v2")
    loop.step("both serving replicas answer from v2")

    # Every step left its event on its topic.
    completed = loop.payloads(Topic.RUN_COMPLETED, RunCompleted)
    assert [(event.run_id, event.status) for event in completed] == [
        (v1_job["run_id"], "finished"),
        (v2_job["run_id"], "finished"),
    ]
    registered = loop.payloads(Topic.MODEL_REGISTERED, ModelRegistered)
    assert [(event.name, event.version) for event in registered] == [(MODEL, 1), (MODEL, 2)]

    def promoted() -> list[tuple[str, int, int | None]]:
        return [
            (event.alias, event.version, event.previous_version)
            for event in loop.payloads(Topic.MODEL_PROMOTED, ModelPromoted)
        ]

    await eventually(lambda: len(promoted()) == 2, within=10, what="two model-promoted events")
    assert promoted() == [("production", 1, None), ("production", 2, 1)]

    # Every request the test sent, through either replica, was logged once, by v1, with its rows.
    def logged_by_v1() -> list[tuple[str, int]]:
        return [
            (request.request_id, request.rows)
            for event in loop.payloads(Topic.PREDICTION_LOGGED, PredictionLogged)
            if event.version == 1
            for request in event.requests
            if request.request_id in loop.sent
        ]

    await eventually(
        lambda: len(logged_by_v1()) >= len(loop.sent), within=10, what="every request in prediction-logged"
    )
    assert sorted(logged_by_v1()) == sorted(loop.sent.items())
    assert {request_id.split("-")[1] for request_id in loop.sent} == {"replica1", "replica2"}
    assert len(loop.seen[Topic.DRIFT_DETECTED]) == 1
    assert len(loop.seen[Topic.RETRAIN_REQUESTED]) == 1
    assert (await loop.batch.get("/health/ready")).status_code == 200
    loop.step(f"gate: {gate['reason']}")
    print("\n".join(f"{seconds:6.1f} s  {what}" for what, seconds in loop.timeline))
