"""SQL for the model registry: registered models, versions, aliases, the audit trail and the outbox."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from services.registry.schemas import AuditEntry, ModelVersion, RegisteredModel
from shared.db import Connection
from shared.events import ModelSignature

VERSION_COLUMNS = (
    "v.model_name, (SELECT m.workspace FROM registered_models m WHERE m.name = v.model_name) AS workspace, "
    "v.version, v.status, v.status_message, v.description, v.tags, v.artifact_uri, "
    "v.artifact_sha256, v.artifact_size, v.signature, v.reference_profile_uri, v.source_run_id, "
    "v.created_by, v.created_at"
)


async def insert_model(
    connection: Connection, name: str, description: str, tags: dict[str, str], workspace: str
) -> bool:
    """False when the name is taken (in any workspace: names are unique across workspaces)."""
    inserted = await connection.fetchval(
        "INSERT INTO registered_models (name, description, tags, workspace) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (name) DO NOTHING RETURNING true",
        name,
        description,
        tags,
        workspace,
    )
    return inserted is True


async def get_models(
    connection: Connection, names: list[str] | None, limit: int, offset: int, workspace: str | None
) -> list[RegisteredModel]:
    """Models by name (None: all), in `workspace` (None: in any)."""
    rows = await connection.fetch(
        """
        SELECT m.name, m.workspace, m.description, m.tags, m.traffic_policy, m.created_at, m.updated_at,
               (SELECT max(version) FROM model_versions v WHERE v.model_name = m.name) AS latest_version,
               coalesce((SELECT jsonb_object_agg(a.alias, a.version) FROM model_aliases a
                         WHERE a.model_name = m.name), '{}') AS aliases
        FROM registered_models m
        WHERE ($1::text[] IS NULL OR m.name = ANY($1::text[])) AND ($4::text IS NULL OR m.workspace = $4)
        ORDER BY m.name LIMIT $2 OFFSET $3
        """,
        names,
        limit,
        offset,
        workspace,
    )
    return [RegisteredModel(**dict(row)) for row in rows]


async def get_model(
    connection: Connection, name: str, workspace: str | None = None
) -> RegisteredModel | None:
    models = await get_models(connection, [name], 1, 0, workspace)
    return models[0] if models else None


async def update_model(connection: Connection, name: str, fields: dict[str, Any]) -> None:
    """Set description and/or replace tags (already merged by the caller)."""
    await connection.execute(
        "UPDATE registered_models SET description = coalesce($2, description), tags = coalesce($3, tags), "
        "updated_at = now() WHERE name = $1",
        name,
        fields.get("description"),
        fields.get("tags"),
    )


async def lock_model(connection: Connection, name: str) -> dict[str, Any] | None:
    """Lock the model's row for this transaction; its current fields, or None when it does not exist."""
    row = await connection.fetchrow(
        "SELECT name, workspace, description, tags, traffic_policy FROM registered_models WHERE name = $1 "
        "FOR UPDATE",
        name,
    )
    return dict(row) if row else None


async def model_workspace(connection: Connection, name: str) -> str | None:
    """The model's workspace; None when there is no such model."""
    workspace: str | None = await connection.fetchval(
        "SELECT workspace FROM registered_models WHERE name = $1", name
    )
    return workspace


async def set_traffic_policy(connection: Connection, name: str, policy: dict[str, Any] | None) -> None:
    await connection.execute(
        "UPDATE registered_models SET traffic_policy = $2, updated_at = now() WHERE name = $1", name, policy
    )


async def delete_model(connection: Connection, name: str) -> None:
    await connection.execute("DELETE FROM registered_models WHERE name = $1", name)


async def take_version_number(connection: Connection, name: str) -> int:
    """The model's next version number, under its row lock until the transaction ends."""
    version: int = await connection.fetchval(
        "UPDATE registered_models SET next_version = next_version + 1, updated_at = now() "
        "WHERE name = $1 RETURNING next_version - 1",
        name,
    )
    return version


async def version_of_run(connection: Connection, name: str, run_id: str) -> int | None:
    version: int | None = await connection.fetchval(
        "SELECT version FROM model_versions WHERE model_name = $1 AND source_run_id = $2", name, run_id
    )
    return version


async def insert_version(
    connection: Connection,
    *,
    name: str,
    version: int,
    status: str,
    status_message: str | None,
    description: str,
    tags: dict[str, str],
    artifact_uri: str | None,
    artifact_sha256: str | None,
    artifact_size: int | None,
    signature: ModelSignature | None,
    reference_profile_uri: str | None,
    source_run_id: str | None,
    created_by: str,
) -> None:
    await connection.execute(
        """
        INSERT INTO model_versions (model_name, version, status, status_message, description, tags,
            artifact_uri, artifact_sha256, artifact_size, signature, reference_profile_uri, source_run_id,
            created_by)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
        """,
        name,
        version,
        status,
        status_message,
        description,
        tags,
        artifact_uri,
        artifact_sha256,
        artifact_size,
        signature.model_dump() if signature else None,
        reference_profile_uri,
        source_run_id,
        created_by,
    )


async def get_versions(
    connection: Connection, name: str, versions: list[int] | None, limit: int, offset: int
) -> list[ModelVersion]:
    rows = await connection.fetch(
        f"""
        SELECT {VERSION_COLUMNS} FROM model_versions v
        WHERE v.model_name = $1 AND ($2::int[] IS NULL OR v.version = ANY($2::int[]))
        ORDER BY v.version DESC LIMIT $3 OFFSET $4
        """,
        name,
        versions,
        limit,
        offset,
    )
    aliases: defaultdict[int, list[str]] = defaultdict(list)
    for row in await connection.fetch(
        "SELECT alias, version FROM model_aliases WHERE model_name = $1 ORDER BY alias", name
    ):
        aliases[row["version"]].append(row["alias"])
    return [ModelVersion(**dict(row), aliases=aliases[row["version"]]) for row in rows]


async def get_version(connection: Connection, name: str, version: int) -> ModelVersion | None:
    found = await get_versions(connection, name, [version], 1, 0)
    return found[0] if found else None


async def update_version_tags(connection: Connection, name: str, version: int, tags: dict[str, str]) -> None:
    await connection.execute(
        "UPDATE model_versions SET tags = $3 WHERE model_name = $1 AND version = $2", name, version, tags
    )


async def delete_version(connection: Connection, name: str, version: int) -> None:
    await connection.execute(
        "DELETE FROM model_versions WHERE model_name = $1 AND version = $2", name, version
    )


async def alias_version(connection: Connection, name: str, alias: str, *, lock: bool = False) -> int | None:
    version: int | None = await connection.fetchval(
        "SELECT version FROM model_aliases WHERE model_name = $1 AND alias = $2"
        + (" FOR UPDATE" if lock else ""),
        name,
        alias,
    )
    return version


async def aliases_of(connection: Connection, name: str) -> dict[str, int]:
    rows = await connection.fetch("SELECT alias, version FROM model_aliases WHERE model_name = $1", name)
    return {row["alias"]: row["version"] for row in rows}


async def set_alias(connection: Connection, name: str, alias: str, version: int) -> None:
    await connection.execute(
        """
        INSERT INTO model_aliases (model_name, alias, version) VALUES ($1, $2, $3)
        ON CONFLICT (model_name, alias) DO UPDATE SET version = excluded.version, updated_at = now()
        """,
        name,
        alias,
        version,
    )


async def delete_alias(connection: Connection, name: str, alias: str) -> None:
    await connection.execute("DELETE FROM model_aliases WHERE model_name = $1 AND alias = $2", name, alias)


async def record_audit(
    connection: Connection,
    *,
    name: str,
    action: str,
    actor: str,
    version: int | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """An entry in the model's workspace (so record it while the model exists)."""
    await connection.execute(
        "INSERT INTO audit_log (model_name, action, actor, version, before, after, workspace) "
        "VALUES ($1, $2, $3, $4, $5, $6, "
        "coalesce((SELECT workspace FROM registered_models WHERE name = $1), 'default'))",
        name,
        action,
        actor,
        version,
        before,
        after,
    )


async def audit_entries(
    connection: Connection, name: str, limit: int, offset: int, workspace: str | None
) -> list[AuditEntry]:
    rows = await connection.fetch(
        "SELECT id, model_name, action, actor, at, version, before, after FROM audit_log "
        "WHERE model_name = $1 AND ($4::text IS NULL OR workspace = $4) ORDER BY id LIMIT $2 OFFSET $3",
        name,
        limit,
        offset,
        workspace,
    )
    return [AuditEntry(**dict(row)) for row in rows]
