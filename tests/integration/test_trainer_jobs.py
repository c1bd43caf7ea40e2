"""The trainer on real servers, with a real registry process: jobs train every allowlisted estimator to a
registered version, bad data fails clearly, the champion/challenger gate decides both ways, retrain
requests are acted on (and coalesced), and a job whose replica died is picked up again."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka.partitioner import DefaultPartitioner

from services.trainer.app import create_app as create_trainer_app
from services.trainer.settings import TrainerSettings
from services.trainer.spec import ESTIMATORS
from shared.bus import KafkaBus
from shared.events import CloudEvent, RetrainRequested, Topic
from tests.conftest import Infrastructure
from tests.integration.conftest import fresh_namespace
from tests.processes import ServiceProcess
from tests.trainer_data import FAST_HYPERPARAMETERS, FEATURES, credit_risk_frame
from tests.waiting import eventually_true


@dataclass
class Platform:
    """A registry process and an in-process trainer sharing one fresh database and Kafka namespace."""

    trainer: httpx.AsyncClient
    registry: httpx.AsyncClient
    bus: KafkaBus
    database_url: str
    environment: dict[str, str]  # what a trainer process needs to join this platform

    async def upload_csv(self, rows: int = 400, seed: int = 0, **columns: Any) -> str:
        frame = credit_risk_frame(rows, seed).assign(**columns)
        response = await self.trainer.post(
            "/datasets", params={"filename": "credit.csv"}, content=frame.to_csv(index=False).encode()
        )
        assert response.status_code == 201, response.text
        return str(response.json()["uri"])

    async def train(self, **request: Any) -> dict[str, Any]:
        """Submit a job and wait until it ends; the job's final state."""
        response = await self.trainer.post("/jobs", json=request)
        assert response.status_code == 201, response.text
        return await self.finished_job(response.json()["id"])

    async def finished_job(self, job_id: str, within: float = 120) -> dict[str, Any]:
        job: dict[str, Any] = {}

        async def ended() -> bool:
            job.update((await self.trainer.get(f"/jobs/{job_id}")).json())
            return job["status"] in ("succeeded", "failed")

        await eventually_true(ended, within=within, what=f"job {job_id} ending")
        return job

    async def version_of_run(self, model: str, run_id: str) -> dict[str, Any]:
        found: dict[str, Any] = {}

        async def registered() -> bool:
            response = await self.registry.get(f"/models/{model}/versions")
            versions = response.json()["versions"] if response.status_code == 200 else []
            found.update(next((v for v in versions if v["source_run_id"] == run_id), {}))
            return bool(found)

        await eventually_true(registered, what=f"{model} registered from run {run_id}")
        return found


def job_request(dataset_uri: str, estimator: str, model: str, **overrides: Any) -> dict[str, Any]:
    task = ESTIMATORS[estimator].task
    return {
        "dataset_uri": dataset_uri,
        "target": "default" if task == "classification" else "loss",
        "task": task,
        "estimator": estimator,
        "hyperparameters": FAST_HYPERPARAMETERS[estimator],
        "model_name": model,
        "feature_columns": FEATURES,
        **overrides,
    }


@pytest.fixture(scope="module")
async def platform(
    infrastructure: Infrastructure, module_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Platform]:
    namespace = fresh_namespace()
    environment = {
        **infrastructure.isolated_environment(module_database_url, namespace),
        "FLYWHEEL_LOG_LEVEL": "WARNING",
    }
    registry = ServiceProcess(
        "registry", environment, tmp_path_factory.mktemp("logs") / "registry.log"
    ).start()
    registry.wait_until_ready()
    settings = infrastructure.settings(
        database_url=module_database_url, kafka_namespace=namespace, s3_bucket="flywheel-tests"
    )
    trainer_settings = TrainerSettings(
        registry_url=registry.url,
        heartbeat_seconds=0.5,
        stale_job_seconds=2,
        max_concurrent_jobs=2,
        schedule_poll_seconds=0.5,
    )
    app = create_trainer_app(settings, trainer_settings)
    bus = KafkaBus(infrastructure.kafka_bootstrap, client_id="tests", namespace=namespace)
    await bus.start()
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://trainer") as trainer,
            httpx.AsyncClient(base_url=registry.url) as registry_client,
        ):
            trainer_environment = {**environment, "FLYWHEEL_TRAINER_REGISTRY_URL": registry.url}
            yield Platform(trainer, registry_client, bus, module_database_url, trainer_environment)
    finally:
        await bus.stop()
        registry.stop()


@pytest.mark.parametrize("estimator", list(ESTIMATORS))
async def test_every_allowlisted_estimator_trains_to_a_registered_version(
    platform: Platform, estimator: str
) -> None:
    model = f"credit-{estimator.replace('_', '-')}"
    job = await platform.train(**job_request(await platform.upload_csv(), estimator, model))
    assert job["status"] == "succeeded", job["error"]
    assert job["result"]["parity"]["passed"] is True
    version = await platform.version_of_run(model, job["run_id"])
    assert version["status"] == "ready"
    assert version["reference_profile_uri"].endswith("/reference_profile.json")

    run = (await platform.registry.get(f"/runs/{job['run_id']}")).json()
    assert run["status"] == "finished"
    classification = ESTIMATORS[estimator].task == "classification"
    expected = {"accuracy", "roc_auc", "f1", "log_loss"} if classification else {"rmse", "mae", "r2"}
    assert expected <= set(run["metrics"])
    artifacts = {a["path"] for a in (await platform.registry.get(f"/runs/{job['run_id']}/artifacts")).json()}
    assert {
        "model/model.onnx",
        "reference_profile.json",
        "validation_report.html",
        "validation_report.json",
    } <= artifacts


async def test_the_same_job_with_the_same_seed_gives_the_same_metrics(platform: Platform) -> None:
    dataset = await platform.upload_csv()
    first = await platform.train(**job_request(dataset, "random_forest_classifier", "repeatable", seed=3))
    second = await platform.train(**job_request(dataset, "random_forest_classifier", "repeatable", seed=3))
    assert first["result"]["metrics"] == second["result"]["metrics"]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"target": "no_such_column"}, "no_such_column"),
        ({"feature_columns": ["income", "colour"]}, "colour"),
    ],
)
async def test_bad_input_fails_the_job_at_once_and_registers_nothing(
    platform: Platform, change: dict[str, Any], problem: str
) -> None:
    model = f"bad-{uuid.uuid4().hex[:6]}"
    job = await platform.train(
        **job_request(await platform.upload_csv(), "logistic_regression", model) | change
    )
    assert job["status"] == "failed"
    assert any(problem in text for text in job["problems"]), job
    run = (await platform.registry.get(f"/runs/{job['run_id']}")).json()
    assert run["status"] == "failed"
    assert (await platform.registry.get(f"/models/{model}")).status_code == 404


async def test_new_data_unlike_the_previous_training_data_fails_with_every_problem(
    platform: Platform,
) -> None:
    model = "validated"
    first = await platform.train(**job_request(await platform.upload_csv(), "logistic_regression", model))
    await platform.version_of_run(model, first["run_id"])
    frame = credit_risk_frame(seed=2)
    age_groups = frame["age"].map(lambda age: "senior" if age > 50 else "adult")  # was numeric
    shifted = await platform.upload_csv(seed=2, income=frame["income"] * 1000, age=age_groups)
    job = await platform.train(**job_request(shifted, "logistic_regression", model))
    assert job["status"] == "failed"
    assert any("income" in problem for problem in job["problems"]), job["problems"]
    assert any("age" in problem for problem in job["problems"]), job["problems"]
    assert (
        len([v for v in (await platform.registry.get(f"/models/{model}/versions")).json()["versions"]]) == 1
    )


async def test_an_unreadable_dataset_fails_the_job_with_the_reason(platform: Platform) -> None:
    upload = await platform.trainer.post(
        "/datasets", params={"filename": "x.parquet"}, content=b"not parquet"
    )
    job = await platform.train(**job_request(upload.json()["uri"], "logistic_regression", "unreadable"))
    assert job["status"] == "failed"
    assert "parquet" in job["error"].lower()


async def test_unknown_estimator_and_unknown_job_are_client_errors(platform: Platform) -> None:
    response = await platform.trainer.post(
        "/jobs", json=job_request("s3://x/y.csv", "logistic_regression", "m") | {"estimator": "svm"}
    )
    assert response.status_code == 422
    assert "unknown estimator 'svm'" in response.text
    assert (await platform.trainer.get("/jobs/nope")).status_code == 404


@pytest.mark.parametrize(
    ("dataset_uri", "reason"),
    [
        ("s3://another-bucket/credit.csv", "is not in this store"),
        ("s3://flywheel-tests/datasets/../../another-bucket/credit.csv", "'..' path segment"),
        ("file:///etc/passwd", "is not in this store"),
    ],
)
async def test_a_dataset_outside_the_store_is_refused_before_a_job_is_queued(
    platform: Platform, dataset_uri: str, reason: str
) -> None:
    model = f"outside-{uuid.uuid4().hex[:8]}"
    response = await platform.trainer.post(
        "/jobs", json=job_request(dataset_uri, "logistic_regression", model)
    )
    assert response.status_code == 400
    assert reason in response.json()["detail"]
    assert (await platform.trainer.get("/jobs", params={"model": model})).json()["jobs"] == []


async def test_the_gate_promotes_a_better_challenger_and_keeps_the_champion_otherwise(
    platform: Platform,
) -> None:
    model = "gated"
    dataset = await platform.upload_csv()
    policy = {
        "promotion": {"champion_alias": "production", "promote_to": "production", "min_improvement": 0.0}
    }
    first = await platform.train(**job_request(dataset, "logistic_regression", model) | policy)
    v1 = await platform.version_of_run(model, first["run_id"])
    await eventually_production(platform, model, v1["version"])
    assert first["result"]["gate"]["promoted"] is True

    demanding = {"promotion": {**policy["promotion"], "min_improvement": 0.5}}  # AUC cannot rise by 0.5
    rejected = await platform.train(**job_request(dataset, "logistic_regression", model) | demanding)
    v2 = await platform.version_of_run(model, rejected["run_id"])
    assert rejected["result"]["gate"]["promoted"] is False
    assert rejected["result"]["gate"]["champion_version"] == v1["version"]
    await eventually_tagged(platform, model, v2["version"], "rejected")
    assert (await platform.registry.get(f"/models/{model}/aliases/production")).json()["version"] == v1[
        "version"
    ]

    equal_or_better = await platform.train(**job_request(dataset, "logistic_regression", model) | policy)
    v3 = await platform.version_of_run(model, equal_or_better["run_id"])
    await eventually_production(platform, model, v3["version"])
    audit = (await platform.registry.get(f"/models/{model}/audit")).json()["entries"]
    assert [e["after"]["version"] for e in audit if e["action"] == "set_alias"] == [
        v1["version"],
        v3["version"],
    ]
    assert any(
        e["action"] == "set_version_tag" and e["after"] == {"gate.decision": "rejected"} for e in audit
    )


async def eventually_production(platform: Platform, model: str, version: int) -> None:
    async def promoted() -> bool:
        response = await platform.registry.get(f"/models/{model}/aliases/production")
        return response.status_code == 200 and response.json()["version"] == version

    await eventually_true(promoted, what=f"{model} v{version} in production")


async def eventually_tagged(platform: Platform, model: str, version: int, decision: str) -> None:
    async def tagged() -> bool:
        response = await platform.registry.get(f"/models/{model}/versions/{version}")
        return bool(response.json()["tags"].get("gate.decision") == decision)

    await eventually_true(tagged, what=f"{model} v{version} tagged {decision}")


async def test_retrain_requested_trains_with_the_production_configuration_and_coalesces(
    platform: Platform,
) -> None:
    model = "retrained"
    policy = {"promotion": {"min_improvement": 0.0}}
    first = await platform.train(
        **job_request(await platform.upload_csv(), "logistic_regression", model) | policy
    )
    v1 = await platform.version_of_run(model, first["run_id"])
    await eventually_production(platform, model, v1["version"])

    newer = await platform.upload_csv(seed=1)
    request = RetrainRequested(model=model, reason="drift", requested_by="monitor", dataset_uri=newer)
    for _ in range(2):  # a duplicate request while the first is being handled joins it
        await platform.bus.publish(
            Topic.RETRAIN_REQUESTED, CloudEvent.wrap(request, source="/tests"), key=model
        )

    async def retrain_jobs() -> list[dict[str, Any]]:
        jobs = (await platform.trainer.get("/jobs", params={"model": model})).json()["jobs"]
        return [job for job in jobs if job["reason"] == "drift"]

    async def retrain_finished() -> bool:
        jobs = await retrain_jobs()
        return bool(jobs) and all(job["status"] in ("succeeded", "failed") for job in jobs)

    await eventually_true(retrain_finished, within=120, what="the retrain job finishing")
    jobs = await retrain_jobs()
    assert len(jobs) == 1
    assert jobs[0]["status"] == "succeeded", jobs[0]["error"]
    assert jobs[0]["request"]["dataset_uri"] == newer
    assert jobs[0]["request"]["estimator"] == "logistic_regression"
    await platform.version_of_run(model, jobs[0]["run_id"])


async def test_a_job_whose_replica_died_is_queued_again_and_finishes(platform: Platform) -> None:
    dataset = await platform.upload_csv()
    request = job_request(dataset, "logistic_regression", "orphaned")
    job_id = uuid.uuid4().hex
    connection = await asyncpg.connect(platform.database_url)
    try:  # a job some replica claimed, then died without a heartbeat for a minute
        await connection.execute(
            "INSERT INTO trainer.jobs (id, model_name, status, stage, reason, request, attempts, worker, "
            "heartbeat_at, started_at) VALUES ($1, 'orphaned', 'running', 'training', 'manual', $2::jsonb, "
            "1, 'dead-replica', now() - interval '1 minute', now() - interval '2 minutes')",
            job_id,
            json.dumps(request),
        )
    finally:
        await connection.close()
    job = await platform.finished_job(job_id)
    assert job["status"] == "succeeded", job["error"]
    assert job["attempts"] == 2


async def test_a_due_schedule_requests_one_retrain_and_moves_to_its_next_time(platform: Platform) -> None:
    model = "scheduled"
    policy = {"promotion": {"min_improvement": 0.0}}
    first = await platform.train(
        **job_request(await platform.upload_csv(), "logistic_regression", model) | policy
    )
    v1 = await platform.version_of_run(model, first["run_id"])
    await eventually_production(platform, model, v1["version"])

    invalid = await platform.trainer.put(f"/schedules/{model}", json={"cron": "every quarter"})
    assert invalid.status_code == 422
    schedule = (await platform.trainer.put(f"/schedules/{model}", json={"cron": "0 3 1 */3 *"})).json()
    assert schedule["last_run_at"] is None
    connection = await asyncpg.connect(platform.database_url)
    try:  # make it due now rather than next quarter
        await connection.execute(
            "UPDATE trainer.retrain_schedules SET next_run_at = now() - interval '1 second' "
            "WHERE model_name = $1",
            model,
        )
    finally:
        await connection.close()

    async def scheduled_jobs() -> list[dict[str, Any]]:
        jobs = (await platform.trainer.get("/jobs", params={"model": model})).json()["jobs"]
        return [job for job in jobs if job["reason"].startswith("schedule")]

    async def retrained() -> bool:
        jobs = await scheduled_jobs()
        return bool(jobs) and jobs[0]["status"] in ("succeeded", "failed")

    await eventually_true(retrained, within=120, what="the scheduled retrain finishing")
    jobs = await scheduled_jobs()
    assert len(jobs) == 1
    assert jobs[0]["status"] == "succeeded", jobs[0]["error"]
    listed = (await platform.trainer.get("/schedules")).json()
    fired = next(entry for entry in listed if entry["model_name"] == model)
    assert fired["last_run_at"] is not None
    assert fired["next_run_at"] > fired["last_run_at"]
    assert (await platform.trainer.delete(f"/schedules/{model}")).status_code == 204
    assert (await platform.trainer.delete(f"/schedules/{model}")).status_code == 404


async def test_a_due_schedule_whose_model_is_gone_is_dropped_not_fired(platform: Platform) -> None:
    model = "scheduled-then-deleted"
    assert (await platform.registry.post("/models", json={"name": model})).status_code == 201
    assert (await platform.trainer.put(f"/schedules/{model}", json={"cron": "0 3 * * *"})).status_code == 200
    assert (await platform.registry.delete(f"/models/{model}")).status_code == 204
    connection = await asyncpg.connect(platform.database_url)
    try:
        await connection.execute(
            "UPDATE trainer.retrain_schedules SET next_run_at = now() - interval '1 second' "
            "WHERE model_name = $1",
            model,
        )
    finally:
        await connection.close()

    async def dropped() -> bool:
        listed = (await platform.trainer.get("/schedules")).json()
        return all(entry["model_name"] != model for entry in listed)

    await eventually_true(dropped, within=30, what="the schedule of a deleted model being dropped")
    assert (await platform.trainer.get("/jobs", params={"model": model})).json()["jobs"] == []


def model_names_covering_every_partition(partitions: int = 3) -> list[str]:
    """One model name per partition of training-jobs (keyed by model name), so that every member of the
    consumer group is given at least one job."""
    chosen: dict[int, str] = {}
    candidate = 0
    while len(chosen) < partitions:
        name = f"replicated-{candidate}"
        partition = DefaultPartitioner()(name.encode(), list(range(partitions)), list(range(partitions)))
        chosen.setdefault(partition, name)
        candidate += 1
    return list(chosen.values())


async def test_two_replicas_share_the_jobs_and_each_job_runs_once(
    platform: Platform, infrastructure: Infrastructure, tmp_path: Path
) -> None:
    second = ServiceProcess("trainer", platform.environment, tmp_path / "second-trainer.log").start()
    try:
        second.wait_until_ready()
        await asyncio.sleep(3)  # let the consumer group rebalance onto both replicas
        dataset = await platform.upload_csv()
        submitted = [
            (
                await platform.trainer.post("/jobs", json=job_request(dataset, "logistic_regression", name))
            ).json()
            for name in model_names_covering_every_partition()
        ]
        jobs = [await platform.finished_job(job["id"]) for job in submitted]
        assert [job["status"] for job in jobs] == ["succeeded"] * len(jobs)
        assert [job["attempts"] for job in jobs] == [1] * len(jobs)
        connection = await asyncpg.connect(platform.database_url)
        try:
            workers = await connection.fetch(
                "SELECT DISTINCT worker FROM trainer.jobs WHERE id = ANY($1::text[])",
                [job["id"] for job in jobs],
            )
        finally:
            await connection.close()
        assert len(workers) == 2, "both replicas should have trained a job"
    finally:
        second.stop()
