"""The migration runner on a real PostgreSQL: idempotent, safe under concurrent starts, edit-proof."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from shared.migrations import MigrationError, apply_migrations, load_migrations

SCHEMA_DUMP = """
SELECT table_name, column_name, data_type
FROM information_schema.columns WHERE table_schema = 'inventory'
ORDER BY table_name, ordinal_position
"""


@pytest.fixture
def migrations_dir(tmp_path: Path) -> Path:
    (tmp_path / "0001_create_items.sql").write_text(
        "CREATE TABLE items (id bigserial PRIMARY KEY, name text NOT NULL UNIQUE);"
    )
    (tmp_path / "0002_add_price.sql").write_text(
        "ALTER TABLE items ADD COLUMN price numeric NOT NULL DEFAULT 0;"
        "CREATE INDEX items_price ON items (price);"
    )
    return tmp_path


async def migrate_once(database_url: str, directory: Path) -> list[int]:
    connection = await asyncpg.connect(database_url)
    try:
        return await apply_migrations(connection, "inventory", load_migrations(directory))
    finally:
        await connection.close()


async def schema_of(database_url: str) -> list[tuple[str, str, str]]:
    connection = await asyncpg.connect(database_url)
    try:
        return [tuple(row) for row in await connection.fetch(SCHEMA_DUMP)]
    finally:
        await connection.close()


async def test_applying_twice_applies_each_migration_once(
    fresh_database_url: str, migrations_dir: Path
) -> None:
    assert await migrate_once(fresh_database_url, migrations_dir) == [1, 2]
    first_schema = await schema_of(fresh_database_url)
    assert await migrate_once(fresh_database_url, migrations_dir) == []
    assert await schema_of(fresh_database_url) == first_schema
    assert first_schema == [
        ("items", "id", "bigint"),
        ("items", "name", "text"),
        ("items", "price", "numeric"),
    ]


async def test_concurrent_runners_apply_each_migration_exactly_once(
    fresh_database_url: str, migrations_dir: Path
) -> None:
    results = await asyncio.gather(*(migrate_once(fresh_database_url, migrations_dir) for _ in range(4)))
    assert sorted(version for applied in results for version in applied) == [1, 2]
    connection = await asyncpg.connect(fresh_database_url)
    try:
        recorded = await connection.fetch(
            "SELECT version FROM public.flywheel_migrations WHERE schema_name = 'inventory' ORDER BY version"
        )
    finally:
        await connection.close()
    assert [row["version"] for row in recorded] == [1, 2]


async def test_a_new_migration_is_applied_on_the_next_start(
    fresh_database_url: str, migrations_dir: Path
) -> None:
    await migrate_once(fresh_database_url, migrations_dir)
    (migrations_dir / "0003_add_sku.sql").write_text("ALTER TABLE items ADD COLUMN sku text;")
    assert await migrate_once(fresh_database_url, migrations_dir) == [3]


async def test_editing_an_applied_migration_is_refused(fresh_database_url: str, migrations_dir: Path) -> None:
    await migrate_once(fresh_database_url, migrations_dir)
    (migrations_dir / "0002_add_price.sql").write_text("ALTER TABLE items ADD COLUMN price integer;")
    with pytest.raises(MigrationError, match="0002_add_price was edited after it was applied"):
        await migrate_once(fresh_database_url, migrations_dir)


async def test_a_failing_migration_leaves_no_trace_and_later_ones_wait(
    fresh_database_url: str, migrations_dir: Path
) -> None:
    (migrations_dir / "0003_broken.sql").write_text("CREATE TABLE half (id int); SELECT no_such_function();")
    (migrations_dir / "0004_after.sql").write_text("CREATE TABLE after_broken (id int);")
    with pytest.raises(asyncpg.UndefinedFunctionError):
        await migrate_once(fresh_database_url, migrations_dir)
    tables = {row[0] for row in await schema_of(fresh_database_url)}
    assert tables == {"items"}  # 0001 and 0002 stay applied; 0003 rolled back whole; 0004 not run
