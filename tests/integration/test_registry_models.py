"""The model registry over REST on the real servers: submission, versions, aliases, audit, lineage."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import httpx

from shared.artifacts import S3ArtifactStore
from shared.events import (
    AliasDeleted,
    ModelPromoted,
    ModelRegistered,
    Topic,
    TrafficPolicy,
    TrafficPolicyChanged,
    VersionsDeleted,
)
from tests.conftest import Infrastructure
from tests.integration.conftest import RegistryUnderTest
from tests.models import tiny_classifier_onnx
from tests.processes import ServiceProcess


async def upload(registry: RegistryUnderTest, name: str, model: bytes | None = None, **form: str):  # type: ignore[no-untyped-def]
    return await registry.client.post(
        f"/models/{name}/versions",
        files={"model": ("model.onnx", model if model is not None else tiny_classifier_onnx())},
        data=form,
        headers={"X-Flywheel-Actor": "alice"},
    )


async def object_keys(registry: RegistryUnderTest, prefix: str) -> list[str]:
    store = S3ArtifactStore(
        registry.settings.s3_endpoint or "",
        access_key=registry.settings.s3_access_key.get_secret_value(),
        secret_key=registry.settings.s3_secret_key.get_secret_value(),
        bucket="flywheel-tests",
    )
    return [
        item.object_name
        for item in store.client.list_objects("flywheel-tests", prefix=prefix, recursive=True)
    ]


async def test_an_uploaded_onnx_model_becomes_version_1_with_its_signature(
    registry: RegistryUnderTest,
) -> None:
    response = await upload(registry, "credit-risk", description="first", tags=json.dumps({"owner": "risk"}))
    assert response.status_code == 201, response.text
    version = response.json()
    assert (version["model_name"], version["version"], version["status"]) == ("credit-risk", 1, "ready")
    assert version["artifact_sha256"] == hashlib.sha256(tiny_classifier_onnx()).hexdigest()
    assert version["signature"]["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [-1, 4]}]
    assert [o["name"] for o in version["signature"]["outputs"]] == ["label", "probabilities"]
    assert (version["description"], version["tags"], version["created_by"]) == (
        "first",
        {"owner": "risk"},
        "alice",
    )
    model = (await registry.client.get("/models/credit-risk")).json()
    assert model["latest_version"] == 1

    registered = (await registry.events(Topic.MODEL_REGISTERED))[0].payload_as(ModelRegistered)
    assert (registered.name, registered.version, registered.artifact_uri) == (
        "credit-risk",
        1,
        version["artifact_uri"],
    )


async def test_a_raw_octet_stream_upload_registers_too(registry: RegistryUnderTest) -> None:
    response = await registry.client.post(
        "/models/fraud/versions?description=streamed",
        content=tiny_classifier_onnx(),
        headers={"content-type": "application/octet-stream"},
    )
    assert response.status_code == 201, response.text
    assert (response.json()["version"], response.json()["description"]) == (1, "streamed")


async def test_an_invalid_model_is_400_and_leaves_no_row_and_no_object(registry: RegistryUnderTest) -> None:
    for bad in (b"not a model at all", tiny_classifier_onnx()[:200]):
        response = await upload(registry, "broken", model=bad)
        assert response.status_code == 400
        assert "does not load in onnxruntime" in response.json()["detail"]
    assert (await registry.client.get("/models/broken")).status_code == 404
    assert await object_keys(registry, "models/broken/") == []


async def test_a_reference_profile_outside_the_store_is_400_and_registers_nothing(
    registry: RegistryUnderTest,
) -> None:
    for uri, reason in [
        ("s3://another-bucket/profile.json", "is not in this store"),
        ("s3://flywheel-tests/runs/../../another-bucket/profile.json", "'..' path segment"),
        ("file:///etc/passwd", "is not in this store"),
    ]:
        response = await upload(registry, "outside", reference_profile_uri=uri)
        assert response.status_code == 400
        assert reason in response.json()["detail"]
    assert (await registry.client.get("/models/outside")).status_code == 404


async def test_an_oversized_upload_is_413(registry: RegistryUnderTest) -> None:
    response = await upload(registry, "huge", model=b"\0" * (3 * 1024 * 1024))
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]


async def test_wrong_content_type_is_415(registry: RegistryUnderTest) -> None:
    response = await registry.client.post("/models/m/versions", json={"model": "x"})
    assert response.status_code == 415


async def test_fifty_concurrent_versions_get_distinct_gap_free_numbers(registry: RegistryUnderTest) -> None:
    responses = await asyncio.gather(*(upload(registry, "busy") for _ in range(50)))
    assert [response.status_code for response in responses] == [201] * 50
    assert sorted(response.json()["version"] for response in responses) == list(range(1, 51))


async def test_version_numbers_are_never_reused_after_a_deletion(registry: RegistryUnderTest) -> None:
    await upload(registry, "m")
    await upload(registry, "m")
    assert (await registry.client.delete("/models/m/versions/2")).status_code == 204
    assert (await upload(registry, "m")).json()["version"] == 3


async def test_moving_an_alias_emits_model_promoted_with_the_previous_version(
    registry: RegistryUnderTest,
) -> None:
    client = registry.client
    await upload(registry, "m")
    await upload(registry, "m")
    first = await client.put("/models/m/aliases/production", json={"version": 1})
    assert first.json() == {"model_name": "m", "alias": "production", "version": 1, "previous_version": None}
    moved = await client.put("/models/m/aliases/production", json={"version": 2})
    assert moved.json()["previous_version"] == 1
    assert (await client.get("/models/m/aliases/production")).json()["version"] == 2
    assert (await client.get("/models/m")).json()["aliases"] == {"production": 2}

    promotions = [e.payload_as(ModelPromoted) for e in await registry.events(Topic.MODEL_PROMOTED, count=2)]
    assert [(p.version, p.previous_version) for p in promotions] == [(1, None), (2, 1)]


async def test_deleting_an_alias_a_version_or_the_model_is_announced_after_the_moves_in_order(
    registry: RegistryUnderTest,
) -> None:
    client = registry.client
    for _ in range(3):
        await upload(registry, "m")
    await client.put("/models/m/aliases/production", json={"version": 1})
    await client.put("/models/m/aliases/canary", json={"version": 2})
    assert (await client.delete("/models/m/aliases/canary")).status_code == 204
    assert (await client.delete("/models/m/versions/2")).status_code == 204
    assert (await client.delete("/models/m")).status_code == 204

    events = await registry.events(Topic.MODEL_PROMOTED, count=5)

    assert [event.subject for event in events] == [
        "m/production",
        "m/canary",
        "m/canary",
        "m/2",
        "m",
    ]
    changes = [event.payload() for event in events]
    assert changes[2] == AliasDeleted(name="m", alias="canary", previous_version=2)
    assert changes[3] == VersionsDeleted(name="m", versions=[2])
    assert changes[4] == VersionsDeleted(name="m", versions=[1, 3], model_deleted=True)


async def test_alias_errors_are_404_and_409(registry: RegistryUnderTest) -> None:
    client = registry.client
    await upload(registry, "m")
    assert (await client.put("/models/m/aliases/production", json={"version": 9})).status_code == 404
    assert (await client.put("/models/nope/aliases/production", json={"version": 1})).status_code == 404
    assert (await client.get("/models/m/aliases/canary")).status_code == 404
    await client.put("/models/m/aliases/production", json={"version": 1})
    in_use = await client.delete("/models/m/versions/1")
    assert in_use.status_code == 409
    assert "production" in in_use.json()["detail"]


async def test_a_traffic_policy_names_existing_aliases_and_is_announced(registry: RegistryUnderTest) -> None:
    client = registry.client
    await upload(registry, "m")
    await upload(registry, "m")
    await client.put("/models/m/aliases/production", json={"version": 1})
    await client.put("/models/m/aliases/canary", json={"version": 2})
    assert (await client.get("/models/m/traffic-policy")).status_code == 404
    policy = {"split": {"production": 90, "canary": 10}, "shadow": []}

    missing_alias = await client.put("/models/m/traffic-policy", json={**policy, "shadow": ["staging"]})
    assert missing_alias.status_code == 400
    assert "'staging'" in missing_alias.json()["detail"]
    bad_sum = await client.put("/models/m/traffic-policy", json={"split": {"production": 90, "canary": 5}})
    assert bad_sum.status_code == 422
    assert "sum to 95" in bad_sum.text
    assert (await client.put("/models/nope/traffic-policy", json=policy)).status_code == 404

    stored = await client.put("/models/m/traffic-policy", json=policy, headers={"X-Flywheel-Actor": "bob"})
    assert stored.status_code == 200, stored.text
    assert (await client.get("/models/m/traffic-policy")).json() == policy
    assert (await client.get("/models/m")).json()["traffic_policy"] == policy
    in_use = await client.delete("/models/m/aliases/canary")
    assert in_use.status_code == 409
    assert "traffic policy" in in_use.json()["detail"]
    assert (await client.delete("/models/m/traffic-policy")).status_code == 204
    assert (await client.get("/models/m")).json()["traffic_policy"] is None
    assert (await client.delete("/models/m/aliases/canary")).status_code == 204

    changes = [
        e.payload_as(TrafficPolicyChanged)
        for e in await registry.events(Topic.TRAFFIC_POLICY_CHANGED, count=2)
    ]
    assert [change.policy for change in changes] == [TrafficPolicy.model_validate(policy), None]
    audit = (await client.get("/models/m/audit")).json()["entries"]
    set_policy = next(entry for entry in audit if entry["action"] == "set_traffic_policy")
    assert (set_policy["actor"], set_policy["before"], set_policy["after"]) == ("bob", None, policy)
    assert any(entry["action"] == "delete_traffic_policy" for entry in audit)


async def test_the_audit_trail_records_who_did_what_with_before_and_after(
    registry: RegistryUnderTest,
) -> None:
    client = registry.client
    alice, bob = {"X-Flywheel-Actor": "alice"}, {"X-Flywheel-Actor": "bob"}
    await upload(registry, "m")
    await upload(registry, "m")
    await client.put("/models/m/aliases/production", json={"version": 1}, headers=bob)
    await client.put("/models/m/aliases/production", json={"version": 2}, headers=bob)
    await client.put("/models/m/tags/owner", json={"value": "risk"}, headers=alice)
    await client.delete("/models/m/tags/owner", headers=alice)
    await client.delete("/models/m/aliases/production", headers=bob)
    await client.delete("/models/m", headers=alice)

    entries = (await client.get("/models/m/audit")).json()["entries"]
    assert [(e["action"], e["actor"], e["version"]) for e in entries] == [
        ("create_model", "alice", None),
        ("create_version", "alice", 1),
        ("create_version", "alice", 2),
        ("set_alias", "bob", 1),
        ("set_alias", "bob", 2),
        ("set_tag", "alice", None),
        ("delete_tag", "alice", None),
        ("delete_alias", "bob", 2),
        ("delete_model", "alice", None),
    ]
    assert (entries[4]["before"], entries[4]["after"]) == (
        {"alias": "production", "version": 1},
        {"alias": "production", "version": 2},
    )
    assert entries[-1]["before"]["versions"] == [2, 1]
    assert (await client.get("/models/m")).status_code == 404


async def test_lineage_leads_from_a_version_to_its_run(registry: RegistryUnderTest) -> None:
    client = registry.client
    run = (
        await client.post(
            "/runs",
            json={
                "experiment_name": "credit",
                "dataset_fingerprint": "f" * 64,
                "code_version": "git:1a2b3c",
            },
        )
    ).json()
    await client.post(
        f"/runs/{run['id']}/log-batch",
        json={
            "params": [{"key": "C", "value": "1.0"}],
            "metrics": [{"key": "auc", "value": 0.91}],
        },
    )
    await upload(registry, "credit-risk", source_run_id=run["id"])
    lineage = (await client.get("/models/credit-risk/versions/1/lineage")).json()
    assert lineage["run"]["id"] == run["id"]
    assert lineage["run"]["experiment_name"] == "credit"
    assert (lineage["run"]["params"], lineage["run"]["metrics"]) == ({"C": "1.0"}, {"auc": 0.91})
    assert (lineage["run"]["dataset_fingerprint"], lineage["run"]["code_version"]) == ("f" * 64, "git:1a2b3c")
    same_run_again = await upload(registry, "credit-risk", source_run_id=run["id"])
    assert same_run_again.status_code == 409


def test_nothing_acknowledged_is_lost_when_the_service_is_killed_and_restarted(
    infrastructure: Infrastructure, fresh_database_url: str, unique_name: str, tmp_path: Path
) -> None:
    environment = {
        **infrastructure.isolated_environment(fresh_database_url, unique_name),
    }
    registry = ServiceProcess("registry", environment, tmp_path / "registry.log").start()
    try:
        registry.wait_until_ready()
        run = httpx.post(f"{registry.url}/runs", json={"experiment_name": "durable"}).json()
        httpx.post(
            f"{registry.url}/runs/{run['id']}/log-batch", json={"metrics": [{"key": "auc", "value": 0.9}]}
        )
        created = httpx.post(
            f"{registry.url}/models/durable/versions", files={"model": tiny_classifier_onnx()}
        )
        assert created.status_code == 201
        httpx.put(f"{registry.url}/models/durable/aliases/production", json={"version": 1})
        registry.kill()

        registry.start().wait_until_ready()
        assert httpx.get(f"{registry.url}/models/durable/aliases/production").json()["version"] == 1
        assert httpx.get(f"{registry.url}/runs/{run['id']}").json()["metrics"] == {"auc": 0.9}
        audit = httpx.get(f"{registry.url}/models/durable/audit").json()["entries"]
        assert [entry["action"] for entry in audit] == ["create_model", "create_version", "set_alias"]
    finally:
        registry.stop()
