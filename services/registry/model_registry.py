"""The model registry: registered models, numbered versions, aliases, lineage and the audit trail.

Every change runs in one transaction that also writes its audit entry and, where other services must
know, its event to the outbox; so a change, its audit record and its event exist together or not at all.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from services.registry import model_repository as repository
from services.registry import tracking_repository
from services.registry.errors import Conflict, InvalidRequest, NotFound
from services.registry.onnx_inspection import InvalidModel, inspect_model
from services.registry.schemas import (
    AliasMove,
    AuditPage,
    Lineage,
    LineageRun,
    ModelVersion,
    ModelVersionPage,
    RegisteredModel,
    RegisteredModelCreate,
    RegisteredModelPage,
)
from shared.artifacts import ArtifactNotFound, ArtifactStore, InvalidArtifactKey
from shared.auth import DEFAULT_WORKSPACE, Principal
from shared.db import Connection
from shared.events import (
    AliasDeleted,
    CloudEvent,
    ModelPromoted,
    ModelRegistered,
    ModelSignature,
    RunCompleted,
    Topic,
    TrafficPolicy,
    TrafficPolicyChanged,
    VersionsDeleted,
)
from shared.outbox import enqueue_event
from shared.pagination import decode_page_token, next_page_token

EVENT_SOURCE = "/flywheel/registry"
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class VersionDetails:
    """What a submitter says about a new version besides the model file itself."""

    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    source_run_id: str | None = None
    reference_profile_uri: str | None = None
    sample: dict[str, list[Any]] | None = None


@dataclass(frozen=True)
class CheckedArtifact:
    """A model file that passed validation, or the reason it failed."""

    uri: str
    sha256: str
    size: int
    signature: ModelSignature | None
    failure: str | None = None


@dataclass(frozen=True)
class TagChange:
    """Setting (or, with value None, deleting) one tag: the tags after, and the audit's before/after."""

    tags: dict[str, str]
    before: dict[str, str]
    after: dict[str, str]

    @classmethod
    def of(cls, tags: dict[str, str], key: str, value: str | None) -> TagChange | None:
        """None when asked to delete a tag that is not there."""
        if value is None and key not in tags:
            return None
        changed = {name: current for name, current in tags.items() if name != key}
        if value is not None:
            changed[key] = value
        return cls(
            tags=changed,
            before={key: tags[key]} if key in tags else {},
            after={} if value is None else {key: value},
        )


class ModelRegistry:
    def __init__(
        self, database: asyncpg.Pool, artifacts: ArtifactStore, on_events: Callable[[], None]
    ) -> None:
        self.database = database
        self.artifacts = artifacts
        self.on_events = on_events  # wakes the outbox publisher after a commit with events

    # ------------------------------------------------------------ registered models

    # Every public method acts for a principal: it sees and changes only its workspace's models and
    # versions (anything else reads as missing), and creates in its home workspace.

    async def create_model(
        self, request: RegisteredModelCreate, actor: str, principal: Principal
    ) -> RegisteredModel:
        async with self.database.acquire() as connection, connection.transaction():
            if not await repository.insert_model(
                connection, request.name, request.description, request.tags, principal.home_workspace
            ):
                raise Conflict(
                    f"a model named {request.name!r} exists already (names are unique across workspaces)"
                )
            await repository.record_audit(
                connection,
                name=request.name,
                action="create_model",
                actor=actor,
                after={"description": request.description, "tags": request.tags},
            )
        return await self.get_model(request.name, principal)

    async def get_model(self, name: str, principal: Principal) -> RegisteredModel:
        async with self.database.acquire() as connection:
            model = await repository.get_model(connection, name, principal.scope)
        if model is None:
            raise NotFound(f"no model named {name!r}")
        return model

    async def list_models(
        self, page_size: int, page_token: str | None, principal: Principal
    ) -> RegisteredModelPage:
        offset = decode_page_token(page_token)
        async with self.database.acquire() as connection:
            models = await repository.get_models(connection, None, page_size + 1, offset, principal.scope)
        return RegisteredModelPage(
            models=models[:page_size], next_page_token=next_page_token(offset, page_size, len(models))
        )

    async def update_model(
        self, name: str, description: str, actor: str, principal: Principal
    ) -> RegisteredModel:
        async with self.database.acquire() as connection, connection.transaction():
            before = await self._lock_model(connection, name, principal)
            await repository.update_model(connection, name, {"description": description})
            await repository.record_audit(
                connection,
                name=name,
                action="update_model",
                actor=actor,
                before={"description": before["description"]},
                after={"description": description},
            )
        return await self.get_model(name, principal)

    async def set_model_tag(
        self, name: str, key: str, value: str | None, actor: str, principal: Principal
    ) -> RegisteredModel:
        """Set a tag, or delete it with value None."""
        async with self.database.acquire() as connection, connection.transaction():
            change = TagChange.of((await self._lock_model(connection, name, principal))["tags"], key, value)
            if change is None:
                raise NotFound(f"model {name!r} has no tag {key!r}")
            await repository.update_model(connection, name, {"tags": change.tags})
            await repository.record_audit(
                connection,
                name=name,
                action="delete_tag" if value is None else "set_tag",
                actor=actor,
                before=change.before,
                after=change.after,
            )
        return await self.get_model(name, principal)

    async def delete_model(self, name: str, actor: str, principal: Principal) -> None:
        """Delete the model, its versions and aliases; its audit trail stays, and so do artifact files."""
        async with self.database.acquire() as connection, connection.transaction():
            before = await self._lock_model(connection, name, principal)
            versions = await repository.get_versions(connection, name, None, 1_000_000, 0)
            await repository.record_audit(  # first: the entry takes the workspace of the model
                connection,
                name=name,
                action="delete_model",
                actor=actor,
                before={**before, "versions": [version.version for version in versions]},
            )
            await repository.delete_model(connection, name)
            deleted = VersionsDeleted(
                name=name, versions=sorted(version.version for version in versions), model_deleted=True
            )
            await _announce(connection, deleted, subject=name)
        self.on_events()

    async def _lock_model(
        self, connection: Connection, name: str, principal: Principal | None = None
    ) -> dict[str, Any]:
        """Lock the model's row; NotFound when it does not exist in the principal's workspace."""
        model = await repository.lock_model(connection, name)
        if model is None or (principal is not None and not principal.sees(model["workspace"])):
            raise NotFound(f"no model named {name!r}")
        return model

    @staticmethod
    async def _check_visible(connection: Connection, name: str, principal: Principal) -> None:
        """NotFound unless the model exists in the principal's workspace."""
        if principal.scope is None:
            return
        if await repository.model_workspace(connection, name) != principal.scope:
            raise NotFound(f"no model named {name!r}")

    # ------------------------------------------------------------ versions

    async def submit_version(
        self, name: str, model: Path, details: VersionDetails, actor: str, principal: Principal
    ) -> ModelVersion:
        """Register an uploaded ONNX file (spooled to `model` on disk) as the model's next version. The file
        must load in onnxruntime, answer a smoke inference and have tensor inputs and outputs; otherwise
        InvalidRequest says why, and nothing is stored."""
        self._check_model_name(name)
        if details.reference_profile_uri is not None:  # read later by the monitor: it must be in the store
            try:
                self.artifacts.key_from_uri(details.reference_profile_uri)
            except InvalidArtifactKey as error:
                raise InvalidRequest(f"reference_profile_uri: {error}") from error
        try:
            signature = await asyncio.to_thread(inspect_model, model, details.sample)
        except InvalidModel as error:
            raise InvalidRequest(f"invalid model: {error}") from error
        key = f"models/{name}/uploads/{uuid.uuid4().hex}/model.onnx"
        stored = await self.artifacts.put_stream(key, _chunks_of_file(model), "application/octet-stream")
        assert stored.sha256 is not None
        checked = CheckedArtifact(uri=stored.uri, sha256=stored.sha256, size=stored.size, signature=signature)
        try:
            return await self._insert_version(
                name, checked, details, actor, principal.home_workspace, principal
            )
        except BaseException:  # the row did not commit: the file must not outlive it
            await self.artifacts.delete(key)
            raise

    async def register_completed_run(self, completed: RunCompleted) -> ModelVersion | None:
        """Register the model a finished run produced, once per run however often the event arrives. A file
        that is missing, altered (sha256) or not a servable model gives a failed version saying why."""
        if completed.status != "finished" or completed.model_name is None:
            return None
        name = completed.model_name
        self._check_model_name(name)
        async with self.database.acquire() as connection:
            existing = await repository.version_of_run(connection, name, completed.run_id)
            if existing is not None:
                return await repository.get_version(connection, name, existing)
        checked = await self._check_run_artifact(completed)
        details = VersionDetails(
            source_run_id=completed.run_id, reference_profile_uri=completed.reference_profile_uri
        )
        async with self.database.acquire() as connection:
            workspace = await tracking_repository.run_workspace(connection, completed.run_id)
        try:
            return await self._insert_version(
                name, checked, details, f"run:{completed.run_id}", workspace or DEFAULT_WORKSPACE, None
            )
        except Conflict:  # a redelivery of the same event got there first
            async with self.database.acquire() as connection:
                existing = await repository.version_of_run(connection, name, completed.run_id)
                return await repository.get_version(connection, name, existing) if existing else None

    async def _check_run_artifact(self, completed: RunCompleted) -> CheckedArtifact:
        assert completed.artifact_uri is not None  # a finished run has both (RunCompleted checks)
        assert completed.artifact_sha256 is not None
        uri, expected_sha256 = completed.artifact_uri, completed.artifact_sha256
        try:
            model = await self.artifacts.get_bytes(self.artifacts.key_from_uri(uri))
        except (InvalidArtifactKey, ArtifactNotFound) as error:
            return CheckedArtifact(
                uri, expected_sha256, 0, None, failure=f"model artifact unavailable: {error}"
            )
        sha256 = hashlib.sha256(model).hexdigest()
        if sha256 != expected_sha256:
            return CheckedArtifact(
                uri,
                sha256,
                len(model),
                None,
                failure=f"model artifact sha256 is {sha256}, the run reported {expected_sha256}",
            )
        try:
            signature = await asyncio.to_thread(inspect_model, model, None)
        except InvalidModel as error:
            return CheckedArtifact(uri, sha256, len(model), None, failure=f"invalid model: {error}")
        return CheckedArtifact(uri, sha256, len(model), signature)

    async def _insert_version(
        self,
        name: str,
        checked: CheckedArtifact,
        details: VersionDetails,
        actor: str,
        workspace: str,
        principal: Principal | None,
    ) -> ModelVersion:
        """A new version of `name`, created in `workspace` when missing; `principal` (None: an event's
        producer, trusted) must see the model, or the name belongs to another workspace: Conflict."""
        async with self.database.acquire() as connection, connection.transaction():
            if await repository.insert_model(connection, name, "", {}, workspace):
                await repository.record_audit(connection, name=name, action="create_model", actor=actor)
            locked = await repository.lock_model(connection, name)  # serialises version creation per model
            if principal is not None and (locked is None or not principal.sees(locked["workspace"])):
                raise Conflict(f"the model name {name!r} is taken by another workspace")
            if details.source_run_id is not None:
                existing = await repository.version_of_run(connection, name, details.source_run_id)
                if existing is not None:
                    raise Conflict(f"run {details.source_run_id} is registered as {name} v{existing} already")
            version = await repository.take_version_number(connection, name)
            status = "failed" if checked.failure else "ready"
            await repository.insert_version(
                connection,
                name=name,
                version=version,
                status=status,
                status_message=checked.failure,
                description=details.description,
                tags=details.tags,
                artifact_uri=checked.uri,
                artifact_sha256=checked.sha256,
                artifact_size=checked.size,
                signature=checked.signature,
                reference_profile_uri=details.reference_profile_uri,
                source_run_id=details.source_run_id,
                created_by=actor,
            )
            await repository.record_audit(
                connection,
                name=name,
                action="create_version",
                actor=actor,
                version=version,
                after={
                    "status": status,
                    "artifact_uri": checked.uri,
                    "artifact_sha256": checked.sha256,
                    "source_run_id": details.source_run_id,
                    "status_message": checked.failure,
                },
            )
            if checked.signature is not None and not checked.failure:
                registered = ModelRegistered(
                    name=name,
                    version=version,
                    artifact_uri=checked.uri,
                    artifact_sha256=checked.sha256,
                    signature=checked.signature,
                    reference_profile_uri=details.reference_profile_uri,
                    source_run_id=details.source_run_id,
                )
                await enqueue_event(
                    connection,
                    Topic.MODEL_REGISTERED,
                    CloudEvent.wrap(registered, source=EVENT_SOURCE, subject=f"{name}/{version}"),
                    key=name,
                )
            created = await repository.get_version(connection, name, version)
        self.on_events()
        assert created is not None
        return created

    async def get_version(self, name: str, version: int, principal: Principal) -> ModelVersion:
        async with self.database.acquire() as connection:
            await self._check_visible(connection, name, principal)
            found = await repository.get_version(connection, name, version)
            if found is None:
                raise await self._not_found(connection, name, f"model {name!r} has no version {version}")
        return found

    async def get_version_by_alias(self, name: str, alias: str, principal: Principal) -> ModelVersion:
        async with self.database.acquire() as connection:
            await self._check_visible(connection, name, principal)
            version = await repository.alias_version(connection, name, alias)
            if version is None:
                raise await self._not_found(connection, name, f"model {name!r} has no alias {alias!r}")
            found = await repository.get_version(connection, name, version)
        assert found is not None  # the alias's foreign key keeps its version
        return found

    async def list_versions(
        self, name: str, page_size: int, page_token: str | None, principal: Principal
    ) -> ModelVersionPage:
        offset = decode_page_token(page_token)
        async with self.database.acquire() as connection:
            await self._check_visible(connection, name, principal)
            versions = await repository.get_versions(connection, name, None, page_size + 1, offset)
            if not versions and await repository.get_model(connection, name) is None:
                raise NotFound(f"no model named {name!r}")
        return ModelVersionPage(
            versions=versions[:page_size], next_page_token=next_page_token(offset, page_size, len(versions))
        )

    async def set_version_tag(
        self, name: str, version: int, key: str, value: str | None, actor: str, principal: Principal
    ) -> ModelVersion:
        """Set a version's tag, or delete it with value None."""
        async with self.database.acquire() as connection, connection.transaction():
            await self._lock_model(connection, name, principal)
            current = await repository.get_version(connection, name, version)
            if current is None:
                raise NotFound(f"model {name!r} has no version {version}")
            change = TagChange.of(current.tags, key, value)
            if change is None:
                raise NotFound(f"{name} v{version} has no tag {key!r}")
            await repository.update_version_tags(connection, name, version, change.tags)
            await repository.record_audit(
                connection,
                name=name,
                action="delete_version_tag" if value is None else "set_version_tag",
                actor=actor,
                version=version,
                before=change.before,
                after=change.after,
            )
        return await self.get_version(name, version, principal)

    async def delete_version(self, name: str, version: int, actor: str, principal: Principal) -> None:
        """Delete a version no alias points at; its number is never given out again."""
        async with self.database.acquire() as connection, connection.transaction():
            await self._lock_model(connection, name, principal)
            current = await repository.get_version(connection, name, version)
            if current is None:
                raise NotFound(f"model {name!r} has no version {version}")
            if current.aliases:
                raise Conflict(
                    f"{name} v{version} is what {', '.join(current.aliases)} point(s) at; move or delete "
                    "the alias first"
                )
            await repository.delete_version(connection, name, version)
            await repository.record_audit(
                connection,
                name=name,
                action="delete_version",
                actor=actor,
                version=version,
                before=current.model_dump(mode="json", include={"status", "artifact_uri", "artifact_sha256"}),
            )
            await _announce(
                connection, VersionsDeleted(name=name, versions=[version]), subject=f"{name}/{version}"
            )
        self.on_events()

    # ------------------------------------------------------------ aliases

    async def set_alias(
        self, name: str, alias: str, version: int, actor: str, principal: Principal
    ) -> AliasMove:
        """Point `alias` at `version` and announce it (model-promoted), in one transaction."""
        async with self.database.acquire() as connection, connection.transaction():
            await self._lock_model(connection, name, principal)
            target = await repository.get_version(connection, name, version)
            if target is None:
                raise NotFound(f"model {name!r} has no version {version}")
            if target.status != "ready":
                raise Conflict(
                    f"{name} v{version} failed registration ({target.status_message}); it cannot serve"
                )
            previous = await repository.alias_version(connection, name, alias, lock=True)
            await repository.set_alias(connection, name, alias, version)
            await repository.record_audit(
                connection,
                name=name,
                action="set_alias",
                actor=actor,
                version=version,
                before={"alias": alias, "version": previous},
                after={"alias": alias, "version": version},
            )
            promoted = ModelPromoted(name=name, alias=alias, version=version, previous_version=previous)
            await _announce(connection, promoted, subject=f"{name}/{alias}")
        self.on_events()
        return AliasMove(model_name=name, alias=alias, version=version, previous_version=previous)

    async def delete_alias(self, name: str, alias: str, actor: str, principal: Principal) -> None:
        async with self.database.acquire() as connection, connection.transaction():
            model = await self._lock_model(connection, name, principal)
            policy = model["traffic_policy"]
            if policy is not None and alias in TrafficPolicy.model_validate(policy).aliases():
                raise Conflict(
                    f"model {name!r} routes traffic to alias {alias!r} ({policy}); change its traffic "
                    "policy first"
                )
            previous = await repository.alias_version(connection, name, alias, lock=True)
            if previous is None:
                raise NotFound(f"model {name!r} has no alias {alias!r}")
            await repository.delete_alias(connection, name, alias)
            await repository.record_audit(
                connection,
                name=name,
                action="delete_alias",
                actor=actor,
                version=previous,
                before={"alias": alias, "version": previous},
                after=None,
            )
            deleted = AliasDeleted(name=name, alias=alias, previous_version=previous)
            await _announce(connection, deleted, subject=f"{name}/{alias}")
        self.on_events()

    # ------------------------------------------------------------ traffic policy

    async def get_traffic_policy(self, name: str, principal: Principal) -> TrafficPolicy:
        model = await self.get_model(name, principal)
        if model.traffic_policy is None:
            raise NotFound(f"model {name!r} has no traffic policy; serving answers from its default alias")
        return model.traffic_policy

    async def set_traffic_policy(
        self, name: str, policy: TrafficPolicy | None, actor: str, principal: Principal
    ) -> None:
        """Set (or with None remove) how serving splits the model's traffic; every alias it names must
        exist. Announced with traffic-policy-changed in the same transaction."""
        async with self.database.acquire() as connection, connection.transaction():
            model = await self._lock_model(connection, name, principal)
            if policy is None and model["traffic_policy"] is None:
                raise NotFound(f"model {name!r} has no traffic policy")
            if policy is not None:
                aliases = await repository.aliases_of(connection, name)
                if missing := [alias for alias in policy.aliases() if alias not in aliases]:
                    raise InvalidRequest(
                        f"model {name!r} has no alias {', '.join(map(repr, missing))}; it has "
                        f"{sorted(aliases) or 'none'}"
                    )
            stored = None if policy is None else policy.model_dump(mode="json")
            await repository.set_traffic_policy(connection, name, stored)
            await repository.record_audit(
                connection,
                name=name,
                action="set_traffic_policy" if policy is not None else "delete_traffic_policy",
                actor=actor,
                version=None,
                before=model["traffic_policy"],
                after=stored,
            )
            changed = TrafficPolicyChanged(name=name, policy=policy)
            await enqueue_event(
                connection,
                Topic.TRAFFIC_POLICY_CHANGED,
                CloudEvent.wrap(changed, source=EVENT_SOURCE, subject=name),
                key=name,
            )
        self.on_events()

    # ------------------------------------------------------------ lineage and audit

    async def lineage(self, name: str, version: int, principal: Principal) -> Lineage:
        """From a version to the run that produced it: its params, metrics, data and code."""
        found = await self.get_version(name, version, principal)
        run = None
        if found.source_run_id is not None:
            async with self.database.acquire() as connection:
                source = await tracking_repository.get_run(connection, found.source_run_id)
                experiment = source and await tracking_repository.get_experiment(
                    connection, experiment_id=source.experiment_id
                )
            if source is not None and experiment is not None:
                run = LineageRun(
                    **source.model_dump(exclude={"params", "metrics"}),
                    experiment_name=experiment.name,
                    params=source.params,
                    metrics=source.metrics,
                )
        return Lineage(
            model_name=name,
            version=version,
            artifact_uri=found.artifact_uri,
            artifact_sha256=found.artifact_sha256,
            reference_profile_uri=found.reference_profile_uri,
            source_run_id=found.source_run_id,
            run=run,
        )

    async def audit(
        self, name: str, page_size: int, page_token: str | None, principal: Principal
    ) -> AuditPage:
        """The model's audit trail, oldest first; readable after the model is deleted."""
        offset = decode_page_token(page_token)
        async with self.database.acquire() as connection:
            entries = await repository.audit_entries(connection, name, page_size + 1, offset, principal.scope)
        if not entries and offset == 0:
            raise NotFound(f"no model named {name!r}, now or before")
        return AuditPage(
            entries=entries[:page_size], next_page_token=next_page_token(offset, page_size, len(entries))
        )

    @staticmethod
    def _check_model_name(name: str) -> None:
        if not MODEL_NAME.match(name):
            raise InvalidRequest(
                f"model name {name!r} must start with a letter or digit and hold only letters, digits, "
                "'.', '_' and '-' (at most 128)"
            )

    @staticmethod
    async def _not_found(connection: Connection, name: str, detail: str) -> NotFound:
        """NotFound that says whether the model itself or only the thing asked for is missing."""
        if await repository.get_model(connection, name) is None:
            return NotFound(f"no model named {name!r}")
        return NotFound(detail)


async def _chunks_of_file(path: Path, chunk_bytes: int = 1024 * 1024) -> AsyncIterator[bytes]:
    """The file's bytes a chunk at a time (read off the event loop), never the whole file at once."""
    with path.open("rb") as file:
        while chunk := await asyncio.to_thread(file.read, chunk_bytes):
            yield chunk


async def _announce(
    connection: Connection, change: ModelPromoted | AliasDeleted | VersionsDeleted, subject: str
) -> None:
    """Queue a change to what serves (model-promoted, keyed by the model so that its consumers see one
    model's changes in order) in the caller's transaction."""
    event = CloudEvent.wrap(change, source=EVENT_SOURCE, subject=subject)
    await enqueue_event(connection, Topic.MODEL_PROMOTED, event, key=change.name)
