"""Searching and comparing runs over REST: filters across experiments, order, pages, and clear 400s."""

from __future__ import annotations

from tests.integration.conftest import RegistryUnderTest


async def log_run(registry: RegistryUnderTest, experiment: str, model: str, auc: float, team: str) -> str:
    run = (
        await registry.client.post("/runs", json={"experiment_name": experiment, "tags": {"team": team}})
    ).json()
    await registry.client.post(
        f"/runs/{run['id']}/log-batch",
        json={"params": [{"key": "model", "value": model}], "metrics": [{"key": "auc", "value": auc}]},
    )
    return str(run["id"])


async def test_filter_spans_experiments_and_orders_by_a_metric(registry: RegistryUnderTest) -> None:
    best = await log_run(registry, "a", "rf", 0.93, "risk")
    good = await log_run(registry, "b", "rf", 0.85, "risk")
    await log_run(registry, "a", "rf", 0.75, "risk")
    await log_run(registry, "b", "lr", 0.95, "risk")
    await log_run(registry, "a", "rf", 0.99, "growth")
    response = await registry.client.post(
        "/runs/search",
        json={
            "filter": "metrics.auc > 0.8 and params.model = 'rf' and tags.team = 'risk'",
            "order_by": ["metrics.auc DESC"],
        },
    )
    assert response.status_code == 200
    assert [run["id"] for run in response.json()["runs"]] == [best, good]


async def test_search_pages_through_every_match_once(registry: RegistryUnderTest) -> None:
    ids = {await log_run(registry, "paged", "rf", 0.5 + n / 100, "t") for n in range(7)}
    seen: list[str] = []
    token = None
    while True:
        page = (
            await registry.client.post("/runs/search", json={"max_results": 3, "page_token": token})
        ).json()
        seen += [run["id"] for run in page["runs"]]
        token = page["next_page_token"]
        if token is None:
            break
    assert sorted(seen) == sorted(ids)


async def test_search_within_named_experiments_only(registry: RegistryUnderTest) -> None:
    inside = await log_run(registry, "inside", "rf", 0.9, "t")
    await log_run(registry, "outside", "rf", 0.9, "t")
    experiment = (await registry.client.get("/experiments/by-name/inside")).json()
    page = (await registry.client.post("/runs/search", json={"experiment_ids": [experiment["id"]]})).json()
    assert [run["id"] for run in page["runs"]] == [inside]


async def test_a_malformed_filter_is_400_pointing_at_the_bad_token(registry: RegistryUnderTest) -> None:
    response = await registry.client.post("/runs/search", json={"filter": "metrics.auc == 0.8"})
    assert response.status_code == 400
    problem = response.json()
    assert (problem["position"], problem["token"]) == (12, "==")
    assert "invalid filter" in problem["detail"]
    bad_token = await registry.client.post("/runs/search", json={"page_token": "forged"})
    assert bad_token.status_code == 400


async def test_compare_puts_runs_side_by_side_and_names_differing_params(registry: RegistryUnderTest) -> None:
    first = await log_run(registry, "cmp", "rf", 0.8, "t")
    second = await log_run(registry, "cmp", "lr", 0.7, "t")
    response = await registry.client.get("/runs/compare", params=[("run_id", first), ("run_id", second)])
    comparison = response.json()
    assert [run["metrics"]["auc"] for run in comparison["runs"]] == [0.8, 0.7]
    assert (comparison["param_keys"], comparison["differing_params"]) == (["model"], ["model"])
    missing = await registry.client.get("/runs/compare", params=[("run_id", first), ("run_id", "nope")])
    assert missing.status_code == 404
