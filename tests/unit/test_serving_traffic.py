"""Traffic policies: the split's shares, the caller's request id keeping its alias, and events winning
over a fetch they overtook."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from services.serving.traffic import Route, TrafficPolicies
from shared.events import TrafficPolicy
from shared.model_versions import ModelNotFound

CANARY = TrafficPolicy(split={"production": 90, "canary": 10}, shadow=["staging"])


def fetching(policies: dict[str, TrafficPolicy | None]) -> TrafficPolicies:
    async def fetch(name: str) -> TrafficPolicy | None:
        if name not in policies:
            raise ModelNotFound(name)
        return policies[name]

    return TrafficPolicies(fetch, default_alias="production")


async def test_a_model_without_a_policy_is_answered_by_the_default_alias() -> None:
    assert await fetching({"m": None}).route("m", None) == Route("production")


async def test_the_split_gives_each_alias_its_share_and_every_request_the_shadows() -> None:
    traffic = fetching({"m": CANARY})
    routes = [await traffic.route("m", f"request-{n}") for n in range(10_000)]
    shares = Counter(route.alias for route in routes)
    assert 800 < shares["canary"] < 1200
    assert {route.shadows for route in routes} == {("staging",)}


async def test_the_same_request_id_always_takes_the_same_alias() -> None:
    traffic = fetching({"m": CANARY})
    assert len({(await traffic.route("m", "abc")).alias for _ in range(50)}) == 1


async def test_an_unknown_model_is_not_remembered() -> None:
    policies: dict[str, TrafficPolicy | None] = {}
    traffic = fetching(policies)
    with pytest.raises(ModelNotFound):
        await traffic.route("later", None)
    policies["later"] = TrafficPolicy(split={"canary": 100})
    assert (await traffic.route("later", None)).alias == "canary"


async def test_an_event_during_the_first_fetch_wins_over_what_the_fetch_read() -> None:
    fetched = asyncio.Event()

    async def slow_fetch(name: str) -> TrafficPolicy | None:
        await fetched.wait()
        return None  # read before the change

    traffic = TrafficPolicies(slow_fetch, default_alias="production")
    first = asyncio.create_task(traffic.route("m", None))
    await asyncio.sleep(0)
    traffic.apply("m", TrafficPolicy(split={"canary": 100}))
    fetched.set()
    assert (await first).alias == "canary"
    traffic.apply("m", None)
    assert (await traffic.route("m", None)).alias == "production"
