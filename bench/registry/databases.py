"""The two throwaway databases the servers run on, side by side on the same PostgreSQL."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit, urlunsplit

import asyncpg


class BenchDatabases:
    """`bench_flywheel_<suffix>` and `bench_mlflow_<suffix>`, created next to the database of `admin_url`
    and dropped (with any connection still open to them) by `drop`."""

    def __init__(self, admin_url: str, suffix: str) -> None:
        self.admin_url = admin_url
        self.flywheel_name = f"bench_flywheel_{suffix}"
        self.mlflow_name = f"bench_mlflow_{suffix}"

    @property
    def flywheel_url(self) -> str:
        return _with_database(self.admin_url, self.flywheel_name)

    @property
    def mlflow_url(self) -> str:
        return _with_database(self.admin_url, self.mlflow_name)

    def create(self) -> None:
        asyncio.run(self._execute([f'CREATE DATABASE "{name}"' for name in self._names]))

    def drop(self) -> None:
        asyncio.run(self._execute([f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' for name in self._names]))

    def analyze(self) -> None:
        """Refresh the planner's statistics in both databases, as autovacuum does on a live server."""
        for url in (self.flywheel_url, self.mlflow_url):
            asyncio.run(_run_on(url, ["ANALYZE"]))

    def server_version(self) -> str:
        return asyncio.run(_fetch_value(self.admin_url, "SHOW server_version"))

    @property
    def _names(self) -> tuple[str, str]:
        return (self.flywheel_name, self.mlflow_name)

    async def _execute(self, statements: list[str]) -> None:
        await _run_on(self.admin_url, statements)


def _with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


async def _run_on(url: str, statements: list[str]) -> None:
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
