"""A small synchronous client for the registry's REST API: one method per route the SDK and CLI use.

Every method returns the server's JSON as plain dicts; every error the server answers becomes one of
the exceptions in `flywheel.errors`, carrying the server's message and status (`flywheel.service_client`
does the mapping, for every service's client).
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, BinaryIO
from urllib.parse import quote

from flywheel.service_client import (
    DEFAULT_TIMEOUT_SECONDS,
    Json,
    ServiceAddress,
    ServiceClient,
    page_params,
    path_segment,
)

REGISTRY = ServiceAddress("registry", "--registry-url", "FLYWHEEL_REGISTRY_URL", "http://127.0.0.1:8081")
ACTOR_VARIABLE = "FLYWHEEL_ACTOR"
MAX_PAGE_SIZE = 1000


def default_actor() -> str:
    """Who the audit trail names for changes made from here: FLYWHEEL_ACTOR, else the login name."""
    try:
        return os.environ.get(ACTOR_VARIABLE) or getpass.getuser()
    except (OSError, KeyError):  # no login name, e.g. a container running as a bare uid
        return "anonymous"


class RegistryClient(ServiceClient):
    """The registry over HTTP. Use as a context manager, or call `close()`, to release the connections."""

    address = REGISTRY

    def __init__(
        self, base_url: str | None = None, timeout: float = DEFAULT_TIMEOUT_SECONDS, actor: str | None = None
    ) -> None:
        super().__init__(base_url, timeout, headers={"X-Flywheel-Actor": actor or default_actor()})

    # ------------------------------------------------------------ experiments

    def list_experiments(self, page_size: int = 100, page_token: str | None = None) -> Json:
        """One page of experiments, newest first: {"experiments": [...], "next_page_token": ...}."""
        return self._get("/experiments", params=page_params(page_size, page_token))

    def get_experiment_by_name(self, name: str) -> Json:
        """One experiment by its unique name."""
        return self._get(f"/experiments/by-name/{path_segment(name)}")

    # ------------------------------------------------------------ runs

    def create_run(
        self,
        experiment_name: str,
        *,
        name: str | None = None,
        tags: Mapping[str, str] | None = None,
        code_version: str | None = None,
    ) -> Json:
        """Start a run in the named experiment, which is created when it does not exist yet."""
        body = {"experiment_name": experiment_name, "name": name, "tags": dict(tags or {})}
        return self._send("POST", "/runs", json={**body, "code_version": code_version})

    def get_run(self, run_id: str) -> Json:
        """A run with its params, tags and the last value of each metric."""
        return self._get(f"/runs/{path_segment(run_id)}")

    def end_run(self, run_id: str, status: str) -> Json:
        """End the run as finished, failed or killed."""
        return self._send("PATCH", f"/runs/{path_segment(run_id)}", json={"status": status})

    def log_batch(
        self,
        run_id: str,
        *,
        params: Sequence[Json] = (),
        metrics: Sequence[Json] = (),
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Store params, metric points and tags in one call: all of them, or none (the server allows
        at most 100 params and 1000 metric points per call)."""
        body = {"params": list(params), "metrics": list(metrics), "tags": dict(tags or {})}
        self._request("POST", f"/runs/{path_segment(run_id)}/log-batch", json=body)

    def metric_history(self, run_id: str, key: str) -> Json:
        """Every logged point of one metric, by step."""
        return self._get(f"/runs/{path_segment(run_id)}/metrics/{path_segment(key)}")

    def upload_artifact(
        self,
        run_id: str,
        path: str,
        content: bytes | BinaryIO | Iterable[bytes],
        content_type: str = "application/octet-stream",
    ) -> Json:
        """Store `content` as the run's artifact at `path`; a file or an iterable is streamed, not read
        into memory first."""
        return self._send(
            "PUT",
            f"/runs/{path_segment(run_id)}/artifacts/{quote(path, safe='/')}",
            content=content,
            headers={"content-type": content_type},
        )

    def list_artifacts(self, run_id: str) -> list[Json]:
        """The run's artifacts with their sizes and sha256."""
        artifacts: list[Json] = self._request("GET", f"/runs/{path_segment(run_id)}/artifacts").json()
        return artifacts

    def search_runs(
        self,
        *,
        experiment_ids: Sequence[str] = (),
        filter: str = "",
        order_by: Sequence[str] = (),
        max_results: int = 100,
        page_token: str | None = None,
    ) -> Json:
        """Runs matching a filter such as `metrics.auc > 0.8 and params.model = 'rf'`, ordered by clauses
        such as `metrics.auc DESC`. A malformed filter raises InvalidRequestError with its position."""
        body = {
            "experiment_ids": list(experiment_ids),
            "filter": filter,
            "order_by": list(order_by),
            "max_results": max_results,
            "page_token": page_token,
        }
        return self._send("POST", "/runs/search", json=body)

    def compare_runs(self, run_ids: Sequence[str]) -> Json:
        """Runs side by side: params, last metric values, and which params differ."""
        return self._get("/runs/compare", params={"run_id": list(run_ids)})

    # ------------------------------------------------------------ registered models and versions

    def list_models(self, page_size: int = 100, page_token: str | None = None) -> Json:
        """One page of registered models by name: {"models": [...], "next_page_token": ...}."""
        return self._get("/models", params=page_params(page_size, page_token))

    def get_model(self, name: str) -> Json:
        """One registered model, with its latest version and aliases."""
        return self._get(f"/models/{path_segment(name)}")

    def list_versions(self, name: str, page_size: int = 100, page_token: str | None = None) -> Json:
        """One page of the model's versions, newest first: {"versions": [...], "next_page_token": ...}."""
        return self._get(f"/models/{path_segment(name)}/versions", params=page_params(page_size, page_token))

    def get_version(self, name: str, version: int) -> Json:
        """One version by number."""
        return self._get(f"/models/{path_segment(name)}/versions/{version}")

    def get_version_by_alias(self, name: str, alias: str) -> Json:
        """The version an alias (production, staging, ...) points at."""
        return self._get(f"/models/{path_segment(name)}/aliases/{path_segment(alias)}")

    def register_version(
        self,
        name: str,
        model: bytes,
        *,
        description: str = "",
        source_run_id: str | None = None,
        reference_profile_uri: str | None = None,
        tags: Mapping[str, str] | None = None,
        sample: Mapping[str, list[Any]] | None = None,
    ) -> Json:
        """Upload ONNX bytes as the model's next version. `sample` (input name -> rows) is what the
        registry's smoke inference runs on instead of synthesised zeros."""
        form = {
            "description": description,
            "source_run_id": source_run_id or "",
            "reference_profile_uri": reference_profile_uri or "",
            "tags": json.dumps(dict(tags or {})),
            "sample": json.dumps(sample) if sample is not None else "",
        }
        return self._send(
            "POST",
            f"/models/{path_segment(name)}/versions",
            files={"model": ("model.onnx", model, "application/octet-stream")},
            data=form,
        )

    def lineage(self, name: str, version: int) -> Json:
        """From the version to the run that produced it: params, metrics, dataset and code version."""
        return self._get(f"/models/{path_segment(name)}/versions/{version}/lineage")

    def set_alias(self, name: str, alias: str, version: int) -> Json:
        """Point an alias at a version: {"alias", "version", "previous_version", ...}."""
        return self._send(
            "PUT", f"/models/{path_segment(name)}/aliases/{path_segment(alias)}", json={"version": version}
        )

    def set_traffic_policy(self, name: str, split: dict[str, int], shadow: list[str] | None = None) -> Json:
        """Split the model's requests between aliases by percentage ({"production": 90, "canary": 10}) and
        mirror them to `shadow` aliases (answers logged, never returned)."""
        return self._send(
            "PUT",
            f"/models/{path_segment(name)}/traffic-policy",
            json={"split": split, "shadow": shadow or []},
        )

    def get_traffic_policy(self, name: str) -> Json:
        """The model's traffic policy: {"split": {...}, "shadow": [...]}; NotFoundError when it has none."""
        return self._get(f"/models/{path_segment(name)}/traffic-policy")

    def clear_traffic_policy(self, name: str) -> None:
        """Back to serving every request from the default alias."""
        self._request("DELETE", f"/models/{path_segment(name)}/traffic-policy")

    def audit(self, name: str, page_size: int = 100, page_token: str | None = None) -> Json:
        """One page of the model's audit trail, oldest first: {"entries": [...], "next_page_token": ...}."""
        return self._get(f"/models/{path_segment(name)}/audit", params=page_params(page_size, page_token))

    # ------------------------------------------------------------ access control

    def create_token(self, user: str, workspace: str, role: str) -> Json:
        """A new token for the user, workspace and role (admins only); its secret is in this answer only."""
        return self._send("POST", "/auth/tokens", json={"user": user, "workspace": workspace, "role": role})

    def list_tokens(self) -> list[Json]:
        """Every token, without secrets (admins only)."""
        tokens: list[Json] = self._request("GET", "/auth/tokens").json()
        return tokens

    def revoke_token(self, token_id: str) -> Json:
        """Revoke a token (admins only): refused everywhere within FLYWHEEL_AUTH_CACHE_SECONDS."""
        return self._send("DELETE", f"/auth/tokens/{path_segment(token_id)}")

    def whoami(self) -> Json:
        """Who the token this client sends is: user, workspace, role and token id."""
        return self._get("/auth/whoami")


def every_page(fetch: Callable[[str | None], Json], items_key: str) -> Json:
    """Every page of a listing merged into one body of the same shape, e.g. {"models": [...all]}.

    `fetch(page_token)` returns one page; `items_key` names its list.
    """
    items: list[Json] = []
    token: str | None = None
    while True:
        page = fetch(token)
        items.extend(page[items_key])
        token = page.get("next_page_token")
        if not token:
            return {items_key: items, "next_page_token": None}
