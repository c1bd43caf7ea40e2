"""The registry consumes run-completed: a finished run naming a model becomes a version, exactly once."""

from __future__ import annotations

import hashlib

from shared.artifacts import S3ArtifactStore
from shared.events import CloudEvent, ModelRegistered, RunCompleted, Topic
from tests.integration.conftest import RegistryUnderTest
from tests.models import tiny_classifier_onnx
from tests.waiting import eventually_true


async def store_model(s3_store: S3ArtifactStore, key: str, model: bytes) -> str:
    return (await s3_store.put_bytes(key, model)).uri


def completed(run_id: str, uri: str, sha256: str, model_name: str = "credit-risk") -> CloudEvent:
    payload = RunCompleted(
        run_id=run_id,
        experiment="credit",
        status="finished",
        model_name=model_name,
        metrics={"auc": 0.87},
        artifact_uri=uri,
        artifact_sha256=sha256,
        reference_profile_uri="s3://flywheel-tests/profiles/p.json",
        dataset_fingerprint="d" * 64,
    )
    return CloudEvent.wrap(payload, source="/flywheel/trainer")


async def versions_of(registry: RegistryUnderTest, name: str) -> list[dict[str, object]]:
    response = await registry.client.get(f"/models/{name}/versions")
    return response.json()["versions"] if response.status_code == 200 else []


async def test_a_run_completed_twice_registers_one_version_and_records_the_run(
    registry: RegistryUnderTest, s3_store: S3ArtifactStore, unique_name: str
) -> None:
    model = tiny_classifier_onnx()
    uri = await store_model(s3_store, f"{unique_name}/model.onnx", model)
    event = completed("run-0001", uri, hashlib.sha256(model).hexdigest())
    await registry.bus.publish(Topic.RUN_COMPLETED, event, key="run-0001")
    await registry.bus.publish(Topic.RUN_COMPLETED, event, key="run-0001")  # redelivered

    registered = (await registry.events(Topic.MODEL_REGISTERED))[0].payload_as(ModelRegistered)
    assert (registered.name, registered.version, registered.source_run_id) == ("credit-risk", 1, "run-0001")
    assert registered.reference_profile_uri == "s3://flywheel-tests/profiles/p.json"

    run = (await registry.client.get("/runs/run-0001")).json()
    assert (run["status"], run["metrics"], run["dataset_fingerprint"]) == (
        "finished",
        {"auc": 0.87},
        "d" * 64,
    )
    lineage = (await registry.client.get("/models/credit-risk/versions/1/lineage")).json()
    assert lineage["run"]["experiment_name"] == "credit"

    await registry.bus.publish(Topic.RUN_COMPLETED, completed("run-0002", uri, registered.artifact_sha256))
    await eventually_versions(registry, "credit-risk", 2)
    assert [v["source_run_id"] for v in await versions_of(registry, "credit-risk")] == [
        "run-0002",
        "run-0001",
    ]


async def eventually_versions(registry: RegistryUnderTest, name: str, count: int) -> None:
    async def reached() -> bool:
        return len(await versions_of(registry, name)) >= count

    await eventually_true(reached, what=f"{name} having {count} version(s)")


async def test_an_altered_artifact_gives_a_failed_version_saying_why(
    registry: RegistryUnderTest, s3_store: S3ArtifactStore, unique_name: str
) -> None:
    uri = await store_model(s3_store, f"{unique_name}/model.onnx", tiny_classifier_onnx())
    await registry.bus.publish(Topic.RUN_COMPLETED, completed("run-tampered", uri, "0" * 64))
    await eventually_versions(registry, "credit-risk", 1)
    version = (await versions_of(registry, "credit-risk"))[0]
    assert version["status"] == "failed"
    assert "the run reported 0000" in str(version["status_message"])
    promote = await registry.client.put("/models/credit-risk/aliases/production", json={"version": 1})
    assert promote.status_code == 409


async def test_a_failed_run_is_recorded_without_a_version(registry: RegistryUnderTest) -> None:
    failed = RunCompleted(
        run_id="run-failed",
        experiment="credit",
        status="failed",
        model_name="credit-risk",
        failure_reason="parity: max |onnx - sklearn| = 3e-2 > 1e-4",
    )
    await registry.bus.publish(Topic.RUN_COMPLETED, CloudEvent.wrap(failed, source="/flywheel/trainer"))

    async def recorded_as_failed() -> bool:
        response = await registry.client.get("/runs/run-failed")
        return response.status_code == 200 and response.json()["status"] == "failed"

    await eventually_true(recorded_as_failed, what="the failed run recorded")
    assert (await registry.client.get("/models/credit-risk")).status_code == 404
