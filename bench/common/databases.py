"""Throwaway databases for the servers under test, side by side on the same PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

import asyncpg


class BenchDatabases:
    """One database `bench_<role>_<suffix>` per role (`flywheel`, `mlflow`, ...), created next to the
    database of `admin_url` and dropped (with any connection still open to them) by `drop`."""

    def __init__(self, admin_url: str, suffix: str, roles: Sequence[str]) -> None:
        self.admin_url = admin_url
        self.names = {role: f"bench_{role}_{suffix}" for role in roles}

    def name(self, role: str) -> str:
        return self.names[role]

    def url(self, role: str) -> str:
        return _with_database(self.admin_url, self.names[role])

    def create(self) -> None:
        asyncio.run(_run_on(self.admin_url, [f'CREATE DATABASE "{name}"' for name in self.names.values()]))

    def drop(self) -> None:
        statements = [f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' for name in self.names.values()]
        asyncio.run(_run_on(self.admin_url, statements))

    def analyze(self) -> None:
        """Refresh the planner's statistics in every database, as autovacuum does on a live server."""
        for role in self.names:
            asyncio.run(_run_on(self.url(role), ["ANALYZE"]))

    def server_version(self) -> str:
        return asyncio.run(_fetch_value(self.admin_url, "SHOW server_version"))


def _with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


async def _run_on(url: str, statements: Sequence[str]) -> None:
    connection = await asyncpg.connect(url)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


async def _fetch_value(url: str, query: str) -> str:
    connection = await asyncpg.connect(url)
    try:
        return str(await connection.fetchval(query))
    finally:
        await connection.close()
