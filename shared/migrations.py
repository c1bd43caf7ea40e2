"""Numbered SQL migrations per service, applied once each, in order, under an advisory lock.

A service keeps `NNNN_description.sql` files in its `migrations/` folder; each runs in its own
transaction with the service's schema on the search path, and is recorded (with a checksum) in
`public.flywheel_migrations`. Replicas that start together wait on the lock, then find nothing to do.
Editing a migration that was already applied is refused: add a new one instead.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from shared.db import Connection, validate_schema_name

# Arbitrary but fixed: every Flywheel migration runner takes this one session-level lock.
MIGRATION_LOCK_ID = 0x466C7977686C  # "Flywhl"
_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """A migration set that cannot be applied safely (bad file name, duplicate, edited after applying)."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path) -> list[Migration]:
    """Read the folder's `NNNN_name.sql` files in version order; a misnamed .sql file is an error."""
    migrations: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_FILE.match(path.name)
        if not match:
            raise MigrationError(f"{path}: migration files are named NNNN_lowercase_name.sql")
        version = int(match.group(1))
        if version in migrations:
            raise MigrationError(f"{path}: version {version} is used twice")
        migrations[version] = Migration(version, match.group(2), path.read_text())
    return [migrations[version] for version in sorted(migrations)]


async def apply_migrations(
    connection: Connection,
    schema: str,
    migrations: Sequence[Migration],
) -> list[int]:
    """Apply the migrations `schema` has not had yet; return the versions applied now."""
    validate_schema_name(schema)
    await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
    try:
        await connection.execute(
            """
            CREATE TABLE IF NOT EXISTS public.flywheel_migrations (
                schema_name text NOT NULL,
                version integer NOT NULL,
                name text NOT NULL,
                checksum text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (schema_name, version)
            )
            """
        )
        await connection.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        rows = await connection.fetch(
            "SELECT version, checksum FROM public.flywheel_migrations WHERE schema_name = $1", schema
        )
        applied_checksums = {row["version"]: row["checksum"] for row in rows}
        applied_now: list[int] = []
        for migration in migrations:
            recorded = applied_checksums.get(migration.version)
            if recorded is not None:
                if recorded != migration.checksum:
                    raise MigrationError(
                        f"{schema} migration {migration.version:04d}_{migration.name} was edited after it "
                        "was applied; add a new migration instead"
                    )
                continue
            async with connection.transaction():
                await connection.execute(f'SET LOCAL search_path TO "{schema}", public')
                await connection.execute(migration.sql)
                await connection.execute(
                    "INSERT INTO public.flywheel_migrations (schema_name, version, name, checksum) "
                    "VALUES ($1, $2, $3, $4)",
                    schema,
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            applied_now.append(migration.version)
        return applied_now
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)


async def migrate(pool: asyncpg.Pool, schema: str, directory: Path) -> list[int]:
    """Load the folder's migrations and apply what is pending."""
    async with pool.acquire() as connection:
        return await apply_migrations(connection, schema, load_migrations(directory))
