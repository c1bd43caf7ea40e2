"""Experiment tracking over REST on the real servers: experiments, runs, params, metrics, artifacts."""

from __future__ import annotations

import hashlib

import asyncpg

from tests.integration.conftest import RegistryUnderTest


async def test_experiments_are_created_listed_updated_and_unique_by_name(registry: RegistryUnderTest) -> None:
    client = registry.client
    created = await client.post("/experiments", json={"name": "credit-risk", "tags": {"team": "risk"}})
    assert created.status_code == 201
    experiment = created.json()
    duplicate = await client.post("/experiments", json={"name": "credit-risk"})
    assert duplicate.status_code == 409
    assert "credit-risk" in duplicate.json()["detail"]

    updated = await client.patch(
        f"/experiments/{experiment['id']}", json={"description": "PD model", "tags": {"q": "4"}}
    )
    assert updated.json()["description"] == "PD model"
    assert updated.json()["tags"] == {"team": "risk", "q": "4"}
    assert (await client.get("/experiments/by-name/credit-risk")).json()["id"] == experiment["id"]
    assert [e["name"] for e in (await client.get("/experiments")).json()["experiments"]] == ["credit-risk"]
    assert (await client.get("/experiments/nope")).status_code == 404


async def test_invalid_bodies_are_422_naming_the_field(registry: RegistryUnderTest) -> None:
    response = await registry.client.post("/experiments", json={"name": ""})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "name"]
    response = await registry.client.post("/runs", json={"experiment_name": "e", "colour": "red"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "colour"]


async def test_text_that_is_not_unicode_is_a_422_naming_the_field_and_stores_nothing(
    registry: RegistryUnderTest,
) -> None:
    """JSON can escape half a character (`\\ud800`); UTF-8, and so PostgreSQL, cannot hold it. The 422 that
    names the field echoes the value, which must not turn it into a 500."""
    client = registry.client
    run = (await client.post("/runs", json={"experiment_name": "unicode"})).json()
    bodies = [
        ("/experiments", b'{"name": "x\\ud800"}', ["body", "name"]),
        ("/runs", b'{"experiment_name": "e\\udfff"}', ["body", "experiment_name"]),
        (
            f"/runs/{run['id']}/log-batch",
            b'{"params": [{"key": "a", "value": "\\ud800"}]}',
            ["body", "params", 0, "value"],
        ),
    ]
    for path, body, field in bodies:
        response = await client.post(path, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 422, response.text
        (error,) = response.json()["detail"]
        assert error["loc"] == field
        assert "unicode" in error["msg"]
    assert [e["name"] for e in (await client.get("/experiments")).json()["experiments"]] == ["unicode"]
    assert (await client.get(f"/runs/{run['id']}")).json()["params"] == {}


async def test_a_run_logs_params_metrics_and_tags_and_ends(registry: RegistryUnderTest) -> None:
    client = registry.client
    run = (await client.post("/runs", json={"experiment_name": "churn", "code_version": "abc123"})).json()
    assert run["status"] == "running"
    assert run["name"] == f"run-{run['id'][:8]}"
    batch = {
        "params": [{"key": "model", "value": "rf"}, {"key": "depth", "value": 5}],
        "metrics": [
            {"key": "loss", "value": 0.9, "step": 0},
            {"key": "loss", "value": 0.4, "step": 2},
            {"key": "loss", "value": 0.6, "step": 1},
            {"key": "auc", "value": 0.81},
        ],
        "tags": {"team": "growth"},
    }
    assert (await client.post(f"/runs/{run['id']}/log-batch", json=batch)).status_code == 204
    ended = (await client.patch(f"/runs/{run['id']}", json={"status": "finished"})).json()
    assert ended["status"] == "finished"
    assert ended["end_time"] is not None
    assert ended["params"] == {"model": "rf", "depth": "5"}
    assert ended["metrics"] == {"loss": 0.4, "auc": 0.81}  # the last step, not the last logged
    assert ended["tags"] == {"team": "growth"}
    history = (await client.get(f"/runs/{run['id']}/metrics/loss")).json()
    assert [(p["step"], p["value"]) for p in history["points"]] == [(0, 0.9), (1, 0.6), (2, 0.4)]


async def test_metric_values_read_back_as_the_floats_logged(registry: RegistryUnderTest) -> None:
    # Whole, huge and tiny floats: the run's copy holds them as jsonb numbers, written without a point.
    logged = {"whole": 1.0, "big": 1e20, "beyond_64_bits": 2.0**70, "tiny": 1e-300, "negative": -2.5}
    run = (await registry.client.post("/runs", json={"experiment_name": "floats"})).json()
    points = [{"key": key, "value": value} for key, value in logged.items()]
    await registry.client.post(f"/runs/{run['id']}/log-batch", json={"metrics": points})
    found = (await registry.client.post("/runs/search", json={"filter": "metrics.whole = 1"})).json()
    for answer in ((await registry.client.get(f"/runs/{run['id']}")).json(), found["runs"][0]):
        assert answer["metrics"] == logged
        assert all(type(value) is float for value in answer["metrics"].values())


async def test_params_are_immutable_and_a_conflicting_batch_stores_nothing(
    registry: RegistryUnderTest,
) -> None:
    client = registry.client
    run = (await client.post("/runs", json={"experiment_name": "e"})).json()
    await client.post(f"/runs/{run['id']}/log-batch", json={"params": [{"key": "lr", "value": "0.1"}]})
    same_again = await client.post(
        f"/runs/{run['id']}/log-batch", json={"params": [{"key": "lr", "value": "0.1"}]}
    )
    assert same_again.status_code == 204
    conflicting = await client.post(
        f"/runs/{run['id']}/log-batch",
        json={
            "params": [{"key": "lr", "value": "0.2"}],
            "metrics": [{"key": "acc", "value": 1.0}],
            "tags": {"t": "x"},
        },
    )
    assert conflicting.status_code == 409
    assert "'lr'" in conflicting.json()["detail"]
    stored = (await client.get(f"/runs/{run['id']}")).json()
    assert (stored["params"], stored["metrics"], stored["tags"]) == ({"lr": "0.1"}, {}, {})


async def test_logging_to_an_unknown_run_is_404(registry: RegistryUnderTest) -> None:
    response = await registry.client.post("/runs/missing/log-batch", json={"tags": {"a": "b"}})
    assert response.status_code == 404
    assert "missing" in response.json()["detail"]


async def test_run_artifacts_round_trip_with_sha256_and_stay_inside_the_run(
    registry: RegistryUnderTest,
) -> None:
    client = registry.client
    run = (await client.post("/runs", json={"experiment_name": "e"})).json()
    content = b"<html>report</html>"
    uploaded = await client.put(
        f"/runs/{run['id']}/artifacts/reports/validation.html",
        content=content,
        headers={"content-type": "text/html"},
    )
    assert uploaded.status_code == 201
    assert uploaded.json()["sha256"] == hashlib.sha256(content).hexdigest()
    assert uploaded.json()["uri"] == f"s3://flywheel-tests/runs/{run['id']}/artifacts/reports/validation.html"
    listed = (await client.get(f"/runs/{run['id']}/artifacts")).json()
    assert [artifact["path"] for artifact in listed] == ["reports/validation.html"]
    downloaded = await client.get(f"/runs/{run['id']}/artifacts/reports/validation.html")
    assert downloaded.content == content
    assert downloaded.headers["content-type"].startswith("text/html")
    escaping = await client.put(f"/runs/{run['id']}/artifacts/a/%2E%2E/%2E%2E/other-run/x", content=b"x")
    assert escaping.status_code == 400
    assert (await client.get(f"/runs/{run['id']}/artifacts/nope.txt")).status_code == 404


async def metric_points(registry: RegistryUnderTest, run_id: str) -> int:
    connection = await asyncpg.connect(registry.settings.database_url)
    try:
        count: int = await connection.fetchval(
            "SELECT count(*) FROM registry.metrics WHERE run_id = $1", run_id
        )
        return count
    finally:
        await connection.close()


async def test_deleting_a_run_or_its_experiment_removes_everything_logged_to_it(
    registry: RegistryUnderTest,
) -> None:
    client = registry.client
    points = {"metrics": [{"key": "loss", "value": 0.5, "step": step} for step in range(3)]}
    run = (await client.post("/runs", json={"experiment_name": "e"})).json()
    await client.post(f"/runs/{run['id']}/log-batch", json=points)
    assert await metric_points(registry, run["id"]) == 3
    assert (await client.delete(f"/runs/{run['id']}")).status_code == 204
    assert (await client.get(f"/runs/{run['id']}")).status_code == 404
    assert await metric_points(registry, run["id"]) == 0

    other = (await client.post("/runs", json={"experiment_name": "e"})).json()
    await client.post(f"/runs/{other['id']}/log-batch", json=points)
    assert (await client.delete(f"/experiments/{other['experiment_id']}")).status_code == 204
    assert (await client.get(f"/runs/{other['id']}")).status_code == 404
    assert await metric_points(registry, other["id"]) == 0


async def test_a_run_in_an_unknown_experiment_is_404(registry: RegistryUnderTest) -> None:
    response = await registry.client.post("/runs", json={"experiment_id": "no-such-experiment"})
    assert response.status_code == 404
    assert "no-such-experiment" in response.json()["detail"]
    both = await registry.client.post("/runs", json={"experiment_id": "x", "experiment_name": "y"})
    assert both.status_code == 400
