"""Serving's view of the registry service: which file and signature a version or alias stands for."""

from __future__ import annotations

from typing import Any

import httpx

from services.serving.models import ModelNotFound, VersionRecord
from shared.events import ModelSignature, TrafficPolicy


class RegistryUnavailable(RuntimeError):
    """The registry did not answer, so a version cannot be resolved now (a 503, not a 404)."""


class RegistryClient:
    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        self.http = httpx.AsyncClient(base_url=base_url, timeout=timeout)

    async def close(self) -> None:
        await self.http.aclose()

    async def describe_version(
        self, name: str, version: int | None, alias: str | None
    ) -> VersionRecord | None:
        """The version's record, by number or alias; None when there is no such model, version or alias,
        or when the version failed registration (it cannot be served)."""
        path = (
            f"/models/{name}/versions/{version}" if version is not None else f"/models/{name}/aliases/{alias}"
        )
        found = await self._get(path)
        if found is None:
            return None
        if found["status"] != "ready" or found["signature"] is None:
            return None
        return VersionRecord(
            name=found["model_name"],
            version=found["version"],
            artifact_uri=found["artifact_uri"],
            artifact_sha256=found["artifact_sha256"],
            signature=ModelSignature.model_validate(found["signature"]),
        )

    async def traffic_policy(self, name: str) -> TrafficPolicy | None:
        """The model's traffic policy (None: it has none); ModelNotFound when there is no such model."""
        found = await self._get(f"/models/{name}")
        if found is None:
            raise ModelNotFound(f"no model named {name!r}")
        policy = found.get("traffic_policy")
        return None if policy is None else TrafficPolicy.model_validate(policy)

    async def _get(self, path: str) -> dict[str, Any] | None:
        """The JSON the registry answers, None for a 404; RegistryUnavailable for anything but a 200."""
        try:
            response = await self.http.get(path)
        except httpx.TransportError as error:
            raise RegistryUnavailable(
                f"registry at {self.http.base_url} did not answer: {error!r}"
            ) from error
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise RegistryUnavailable(f"registry GET {path}: {response.status_code} {response.text[:300]}")
        found: dict[str, Any] = response.json()
        return found
