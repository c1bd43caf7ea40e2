"""SQL for API tokens: only each token's sha256 is stored."""

from __future__ import annotations

import asyncpg

from services.registry.schemas import Token
from shared.auth import Principal
from shared.db import Connection

TOKEN_COLUMNS = "id, user_name AS user, workspace, role, created_at, created_by, revoked_at, last_used_at"


async def insert_token(
    connection: Connection, token_id: str, token_hash: str, principal: Principal, created_by: str
) -> Token:
    row = await connection.fetchrow(
        f"""
        INSERT INTO tokens (id, hash, user_name, workspace, role, created_by)
        VALUES ($1, $2, $3, $4, $5, $6) RETURNING {TOKEN_COLUMNS}
        """,
        token_id,
        token_hash,
        principal.user,
        principal.workspace,
        principal.role.value,
        created_by,
    )
    assert row is not None  # a new random id
    return Token(**dict(row))


async def replace_token(
    connection: Connection, token_id: str, token_hash: str, principal: Principal, created_by: str
) -> None:
    """Insert the token under `token_id`, or give that id this hash (rotating a configured token)."""
    await connection.execute(
        """
        INSERT INTO tokens (id, hash, user_name, workspace, role, created_by) VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (id) DO UPDATE SET hash = excluded.hash, user_name = excluded.user_name,
            workspace = excluded.workspace, role = excluded.role, revoked_at = NULL
        """,
        token_id,
        token_hash,
        principal.user,
        principal.workspace,
        principal.role.value,
        created_by,
    )


async def any_token(connection: Connection) -> bool:
    return await connection.fetchval("SELECT EXISTS (SELECT 1 FROM tokens)") is True


async def principal_of(connection: Connection, token_hash: str) -> Principal | None:
    """The principal of a valid (not revoked) token, noting that it was used."""
    row = await connection.fetchrow(
        "UPDATE tokens SET last_used_at = now() WHERE hash = $1 AND revoked_at IS NULL "
        "RETURNING id AS token_id, user_name AS user, workspace, role",
        token_hash,
    )
    return Principal(**dict(row)) if row else None


async def list_tokens(connection: Connection) -> list[Token]:
    rows = await connection.fetch(f"SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created_at, id")
    return [Token(**dict(row)) for row in rows]


async def revoke_token(connection: Connection, token_id: str) -> Token | None:
    """The revoked token (revoking twice keeps the first time); None when there is no such token."""
    row: asyncpg.Record | None = await connection.fetchrow(
        f"UPDATE tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 RETURNING {TOKEN_COLUMNS}",
        token_id,
    )
    return Token(**dict(row)) if row else None
