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


async def test_within_named_experiments_a_search_finds_and_orders_what_one_across_them_does(
    registry: RegistryUnderTest,
) -> None:
    # Within named experiments the filter reads each run's copies of its values (runs.params and
    # runs.metrics), across them the key-value tables: both are written by the same log-batch.
    ids = [await log_run(registry, "same", model, auc, "t") for model, auc in SAME_RUNS]
    await registry.client.post(
        f"/runs/{ids[0]}/log-batch", json={"metrics": [{"key": "auc", "value": 0.1, "step": -1}]}
    )  # an earlier step: the last value stays 0.86
    await registry.client.post(f"/runs/{ids[1]}/log-batch", json={"metrics": [{"key": "auc", "value": 0.2}]})
    no_auc = (await registry.client.post("/runs", json={"experiment_name": "same"})).json()["id"]
    experiment = (await registry.client.get("/experiments/by-name/same")).json()["id"]
    for body in (
        {"filter": "metrics.auc > 0.8 and params.model != 'lr'", "order_by": ["metrics.auc DESC"]},
        {
            "filter": "metrics.auc <= 0.9 or params.model IN ('gb')",
            "order_by": ["params.model", "metrics.auc"],
        },
        {"filter": "params.model LIKE '%b'", "order_by": ["metrics.auc"]},
        {"filter": "", "order_by": ["metrics.auc DESC"]},
    ):
        across = (await registry.client.post("/runs/search", json=body)).json()
        within = (
            await registry.client.post("/runs/search", json=body | {"experiment_ids": [experiment]})
        ).json()
        assert within == across, body
    everything = (await registry.client.post("/runs/search", json={"order_by": ["metrics.auc DESC"]})).json()
    assert [run["id"] for run in everything["runs"]] == [ids[2], ids[0], ids[3], ids[4], ids[1], no_auc]


SAME_RUNS = [("rf", 0.86), ("gb", 0.95), ("rf", 0.99), ("gb", 0.81), ("lr", 0.7)]


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
