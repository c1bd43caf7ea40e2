"""Migration folders: files are read in version order and misnamed ones are refused."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared.migrations import MigrationError, load_migrations

SERVICES_DIR = Path(__file__).resolve().parents[2] / "services"


def test_migrations_load_in_version_order(tmp_path: Path) -> None:
    (tmp_path / "0010_later.sql").write_text("SELECT 2;")
    (tmp_path / "0002_first.sql").write_text("SELECT 1;")
    (tmp_path / ".gitkeep").write_text("")
    migrations = load_migrations(tmp_path)
    assert [(m.version, m.name) for m in migrations] == [(2, "first"), (10, "later")]
    assert migrations[0].checksum != migrations[1].checksum


@pytest.mark.parametrize("name", ["1_short.sql", "0001-dash.sql", "0001_Upper.sql", "0001_.sql"])
def test_misnamed_migration_files_are_refused(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=re.escape("NNNN_lowercase_name.sql")):
        load_migrations(tmp_path)


def test_a_version_used_twice_is_refused(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0001_b.sql").write_text("SELECT 2;")
    with pytest.raises(MigrationError, match="version 1 is used twice"):
        load_migrations(tmp_path)


@pytest.mark.parametrize("service", ["registry", "trainer", "batch", "monitor"])
def test_every_services_migration_folder_loads(service: str) -> None:
    load_migrations(SERVICES_DIR / service / "migrations")
