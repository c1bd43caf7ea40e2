"""The trainer's view of the registry service, over its REST API: runs, artifacts, versions, aliases."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any
from urllib.parse import quote

import httpx

from shared.auth import DEFAULT_WORKSPACE, WORKSPACE_HEADER, authorization_headers

# The workspace the trainer acts for while it runs a job (its runs, experiment and model are made there):
# sent with every call, which the registry honours for the service token only.
acting_for: ContextVar[str | None] = ContextVar("acting_for", default=None)

ACTOR_HEADER = "X-Flywheel-Actor"


class RegistryUnavailable(RuntimeError):
    """The registry did not answer, or answered with an error the trainer cannot act on."""


def segment(value: object) -> str:
    """A value as one URL path segment: a name with `/`, `?`, `%` or control characters stays one name
    (unquoted, it would name another route, or fail to build a URL at all)."""
    return quote(str(value), safe="")


class RegistryClient:
    def __init__(
        self, base_url: str, *, token: str | None = None, actor: str = "trainer", timeout: float = 60.0
    ) -> None:
        """`token`: the service token, sent with every call."""
        headers = {ACTOR_HEADER: actor, **authorization_headers(token)}
        self.http = httpx.AsyncClient(base_url=base_url, timeout=timeout, headers=headers)

    async def close(self) -> None:
        await self.http.aclose()

    async def _call(self, method: str, path: str, *, missing_ok: bool = False, **kwargs: Any) -> Any:
        if (workspace := acting_for.get()) is not None:
            kwargs["headers"] = {**kwargs.get("headers", {}), WORKSPACE_HEADER: workspace}
        try:
            response = await self.http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise RegistryUnavailable(
                f"registry at {self.http.base_url} did not answer: {error!r}"
            ) from error
        if missing_ok and response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise RegistryUnavailable(
                f"registry {method} {path}: {response.status_code} {response.text[:500]}"
            )
        return response.json() if response.content else None

    async def create_run(
        self, experiment: str, name: str, tags: dict[str, str], dataset_fingerprint: str | None
    ) -> str:
        run = await self._call(
            "POST",
            "/runs",
            json={
                "experiment_name": experiment,
                "name": name,
                "tags": tags,
                "dataset_fingerprint": dataset_fingerprint,
            },
        )
        return str(run["id"])

    async def get_run(self, run_id: str) -> dict[str, Any] | None:
        run: dict[str, Any] | None = await self._call("GET", f"/runs/{segment(run_id)}", missing_ok=True)
        return run

    async def log(
        self,
        run_id: str,
        *,
        params: dict[str, str] | None = None,
        metrics: dict[str, float] | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        await self._call(
            "POST",
            f"/runs/{segment(run_id)}/log-batch",
            json={
                "params": [{"key": key, "value": value} for key, value in (params or {}).items()],
                "metrics": [{"key": key, "value": value} for key, value in (metrics or {}).items()],
                "tags": tags or {},
            },
        )

    async def upload_artifact(
        self, run_id: str, path: str, content: bytes, content_type: str
    ) -> dict[str, Any]:
        """Store a run artifact; its record (uri, sha256, size)."""
        artifact: dict[str, Any] = await self._call(
            "PUT",
            f"/runs/{segment(run_id)}/artifacts/{quote(path)}",
            content=content,
            headers={"content-type": content_type},
        )
        return artifact

    async def end_run(self, run_id: str, status: str) -> None:
        await self._call("PATCH", f"/runs/{segment(run_id)}", json={"status": status})

    async def model_workspace(self, model: str) -> str | None:
        """The model's workspace; None when there is no such model."""
        found: dict[str, Any] | None = await self._call("GET", f"/models/{segment(model)}", missing_ok=True)
        return None if found is None else str(found.get("workspace", DEFAULT_WORKSPACE))

    async def version_by_alias(self, model: str, alias: str) -> dict[str, Any] | None:
        version: dict[str, Any] | None = await self._call(
            "GET", f"/models/{segment(model)}/aliases/{segment(alias)}", missing_ok=True
        )
        return version

    async def latest_version(self, model: str) -> dict[str, Any] | None:
        page: dict[str, Any] | None = await self._call(
            "GET", f"/models/{segment(model)}/versions", params={"page_size": 1}, missing_ok=True
        )
        return page["versions"][0] if page and page["versions"] else None

    async def set_alias(self, model: str, alias: str, version: int) -> None:
        await self._call(
            "PUT", f"/models/{segment(model)}/aliases/{segment(alias)}", json={"version": version}
        )

    async def tag_version(self, model: str, version: int, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            await self._call(
                "PUT",
                f"/models/{segment(model)}/versions/{version}/tags/{segment(key)}",
                json={"value": value},
            )
