"""Traffic policies: which alias answers a request for a model, and which aliases shadow it.

A model's policy lives in the registry (`PUT /models/{name}/traffic-policy`); serving reads it the first
time the model is asked for and then follows `traffic-policy-changed`. A model without a policy is
answered by the default alias. The split is drawn per request: from the caller's request id when it
gave one (so a retried request lands on the same alias), else at random.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from shared.events import TrafficPolicy

FetchPolicy = Callable[[str], Awaitable[TrafficPolicy | None]]
BUCKETS = 100  # split weights are whole percentages


@dataclass(frozen=True)
class Route:
    alias: str
    shadows: tuple[str, ...] = ()


class CompiledPolicy:
    """A policy as a table of 100 routes, so that picking one is an index."""

    def __init__(self, policy: TrafficPolicy) -> None:
        shadows = tuple(policy.shadow)
        self.routes = [
            route for alias, weight in policy.split.items() for route in [Route(alias, shadows)] * weight
        ]

    def route(self, bucket: int) -> Route:
        return self.routes[bucket]


class TrafficPolicies:
    def __init__(self, fetch_policy: FetchPolicy, default_alias: str) -> None:
        self.fetch_policy = fetch_policy
        self.default_route = Route(default_alias)
        self._policies: dict[str, CompiledPolicy | None] = {}

    async def route(self, name: str, request_id: str | None) -> Route:
        """The alias that answers this request and the aliases that shadow it. Raises what `fetch_policy`
        raises for an unknown model (nothing is remembered for it)."""
        if name in self._policies:
            policy = self._policies[name]
        else:
            fetched = await self.fetch_policy(name)
            # An event that arrived during the fetch is newer than what the fetch read.
            policy = self._policies.setdefault(name, None if fetched is None else CompiledPolicy(fetched))
        if policy is None:
            return self.default_route
        bucket = zlib.crc32(request_id.encode()) % BUCKETS if request_id else random.randrange(BUCKETS)
        return policy.route(bucket)

    def apply(self, name: str, policy: TrafficPolicy | None) -> None:
        """A policy changed in the registry (None: removed)."""
        self._policies[name] = None if policy is None else CompiledPolicy(policy)

    def forget(self, name: str) -> None:
        self._policies.pop(name, None)
