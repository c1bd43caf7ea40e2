"""Model versions as the services that run them see them: the registry's record of a version (file,
checksum, signature), a client that asks the registry for it, and loading its ONNX file into an
onnxruntime session with the checksum checked. Serving and batch both run models this way."""

from __future__ import annotations

import asyncio
import hashlib
import os
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import onnxruntime

from shared.artifacts import ArtifactStore
from shared.auth import DEFAULT_WORKSPACE, WORKSPACE_HEADER, authorization_headers
from shared.events import ModelSignature, TrafficPolicy


@dataclass(frozen=True)
class VersionRecord:
    """What the registry says of a version: where its file is, its checksum and its signature."""

    name: str
    version: int
    artifact_uri: str
    artifact_sha256: str
    signature: ModelSignature
    reference_profile_uri: str | None = None  # the training data's profile, for the monitor
    workspace: str = DEFAULT_WORKSPACE  # the model's: who may use it


class AliasTable:
    """Which version each alias of each model points at, as this process last heard: filled from the
    registry when an alias is first asked for, then kept current by model-promoted (moves and deletions)."""

    def __init__(self) -> None:
        self._versions: dict[tuple[str, str], int] = {}

    def get(self, name: str, alias: str) -> int | None:
        return self._versions.get((name, alias))

    def move(self, name: str, alias: str, version: int) -> None:
        self._versions[(name, alias)] = version

    def forget(self, name: str, alias: str) -> bool:
        """The alias was deleted; False when it was not known here."""
        return self._versions.pop((name, alias), None) is not None

    def forget_versions(self, name: str, versions: list[int]) -> None:
        """The versions were deleted: the aliases that pointed at them are unknown again."""
        gone = set(versions)
        for (model, alias), version in list(self._versions.items()):
            if model == name and version in gone:
                del self._versions[(model, alias)]

    def of_model(self, name: str) -> dict[str, int]:
        return {alias: version for (model, alias), version in self._versions.items() if model == name}

    def pinned(self) -> set[tuple[str, int]]:
        """The (model, version) pairs some alias points at: never evicted from memory."""
        return {(model, version) for (model, _), version in self._versions.items()}


class ModelNotFound(LookupError):
    """No such model, version or alias."""


class ModelUnavailable(RuntimeError):
    """The version exists but cannot run: its file is missing, altered or does not load."""


class RegistryUnavailable(RuntimeError):
    """The registry did not answer, so a version cannot be resolved now (try again later)."""


class RegistryClient:
    def __init__(self, base_url: str, *, token: str | None = None, timeout: float = 10.0) -> None:
        """`token`: the service token, sent with every call."""
        self.http = httpx.AsyncClient(
            base_url=base_url, timeout=timeout, headers=authorization_headers(token)
        )

    async def close(self) -> None:
        await self.http.aclose()

    async def describe_version(
        self, name: str, version: int | None, alias: str | None
    ) -> VersionRecord | None:
        """The version's record, by number or alias; None when there is no such model, version or alias,
        or when the version failed registration (it cannot run)."""
        # Names come from callers: quoted, a `/` or a control character stays part of one path segment.
        model = quote(name, safe="")
        path = (
            f"/models/{model}/versions/{version}"
            if version is not None
            else f"/models/{model}/aliases/{quote(alias or '', safe='')}"
        )
        found = await self._get(path)
        if found is None or found["status"] != "ready" or found["signature"] is None:
            return None
        return VersionRecord(
            name=found["model_name"],
            version=found["version"],
            artifact_uri=found["artifact_uri"],
            artifact_sha256=found["artifact_sha256"],
            signature=ModelSignature.model_validate(found["signature"]),
            reference_profile_uri=found.get("reference_profile_uri"),
            workspace=found.get("workspace", DEFAULT_WORKSPACE),
        )

    async def traffic_policy(self, name: str) -> TrafficPolicy | None:
        """The model's traffic policy (None: it has none); ModelNotFound when there is no such model."""
        found = await self._get(f"/models/{quote(name, safe='')}")
        if found is None:
            raise ModelNotFound(f"no model named {name!r}")
        policy = found.get("traffic_policy")
        return None if policy is None else TrafficPolicy.model_validate(policy)

    async def workspace_of(self, name: str) -> str | None:
        """The model's workspace; None when there is no such model."""
        found = await self._get(f"/models/{quote(name, safe='')}")
        return None if found is None else str(found.get("workspace", DEFAULT_WORKSPACE))

    async def models_in(self, workspace: str) -> set[str]:
        """The names of the workspace's registered models."""
        names: set[str] = set()
        page_token = None
        while True:
            params = {"page_size": 1000} | ({"page_token": page_token} if page_token else {})
            page = await self._get("/models", params=params, headers={WORKSPACE_HEADER: workspace})
            assert page is not None  # a listing is never a 404
            names.update(model["name"] for model in page["models"])
            if not (page_token := page.get("next_page_token")):
                return names

    async def _get(
        self, path: str, params: dict[str, Any] | None = None, headers: dict[str, str] | None = None
    ) -> dict[str, Any] | None:
        """The JSON the registry answers, None for a 404 or a 422 (a name or number that cannot exist, such as
        a version beyond the registry's range); RegistryUnavailable for anything but a 200."""
        try:
            response = await self.http.get(path, params=params, headers=headers)
        except httpx.TransportError as error:
            raise RegistryUnavailable(
                f"registry at {self.http.base_url} did not answer: {error!r}"
            ) from error
        if response.status_code in (404, 422):
            return None
        if response.status_code != 200:
            raise RegistryUnavailable(f"registry GET {path}: {response.status_code} {response.text[:300]}")
        found: dict[str, Any] = response.json()
        return found


def default_intra_op_threads(workers: int = 1) -> int:
    """The cores shared among a service's workers, at most 4 each (more rarely help small graphs)."""
    return max(1, min(4, (os.cpu_count() or 1) // workers))


def session_options(intra_op_threads: int) -> onnxruntime.SessionOptions:
    """Sized for a service that hands the session large calls: a few intra-op threads help, inter-op
    parallelism does not for these small graphs, and idle threads must not spin on cores that the
    service's HTTP or Kafka work needs."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


async def load_session(
    record: VersionRecord, artifacts: ArtifactStore, intra_op_threads: int, executor: Executor | None = None
) -> onnxruntime.InferenceSession:
    """The version's ONNX file, its sha256 checked against the registry's record, as a session (built off
    the event loop); ModelUnavailable says what is wrong."""
    try:
        model_bytes = await artifacts.get_bytes(artifacts.key_from_uri(record.artifact_uri))
    except Exception as error:
        raise ModelUnavailable(
            f"{record.name} v{record.version}: cannot read {record.artifact_uri}: {error}"
        ) from error
    sha256 = hashlib.sha256(model_bytes).hexdigest()
    if sha256 != record.artifact_sha256:
        raise ModelUnavailable(
            f"{record.name} v{record.version}: the file's sha256 is {sha256}, the registry recorded "
            f"{record.artifact_sha256}"
        )
    try:
        return await asyncio.get_running_loop().run_in_executor(
            executor,
            lambda: onnxruntime.InferenceSession(
                model_bytes, session_options(intra_op_threads), providers=["CPUExecutionProvider"]
            ),
        )
    except Exception as error:
        raise ModelUnavailable(f"{record.name} v{record.version} does not load: {error}") from error
