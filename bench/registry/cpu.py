"""The CPU a server spends, with the PostgreSQL backends serving it: a figure that other work on a shared
machine sways far less than wall-clock time (a busy machine makes a server wait for a core, not work
more), so it tells what each server costs when the throughput figures swing with the load."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from bench.common.cpu import cpu_seconds, group_cpu_seconds


class ServerCpu:
    """CPU seconds used so far by the server's process group (the server and any workers it forks) and
    by the PostgreSQL backends connected to its database (looked up through `admin_url`). A backend
    that closes between two readings takes its seconds with it; both servers keep pooled connections."""

    def __init__(self, process_group: int, admin_url: str, database: str) -> None:
        self.process_group = process_group
        self.admin_url = admin_url
        self.database = database

    def seconds(self) -> float:
        backends = asyncio.run(_backend_pids(self.admin_url, self.database))
        return group_cpu_seconds(self.process_group) + sum(cpu_seconds(pid) or 0.0 for pid in backends)


async def _backend_pids(admin_url: str, database: str) -> list[int]:
    connection = await asyncpg.connect(admin_url)
    try:
        rows = await connection.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", database)
        return [row["pid"] for row in rows]
    finally:
        await connection.close()


def wait_until_idle(servers: list[ServerCpu], *, timeout_seconds: float, idle_fraction: float = 0.05) -> bool:
    """Wait until every server is done starting: over one second, its processes and backends used less
    than `idle_fraction` of a core. An MLflow server answers /health while its job runner and seven huey
    consumers are still importing MLflow, both cores busy for about 20 s: measuring then would slow
    whichever server's turn fell in it, and the faster one most (a larger share of its few seconds).
    False when `timeout_seconds` passed first."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        before = [server.seconds() for server in servers]
        time.sleep(1.0)
        if all(server.seconds() - used < idle_fraction for server, used in zip(servers, before, strict=True)):
            return True
    return False
