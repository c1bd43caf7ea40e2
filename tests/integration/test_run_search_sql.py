"""Compiled run searches run on a real PostgreSQL and select and order the runs they describe."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services.registry.search import compile_search

TABLES = """
CREATE TABLE runs (
    id text PRIMARY KEY, experiment_id text NOT NULL, name text NOT NULL, status text NOT NULL,
    start_time timestamptz NOT NULL, end_time timestamptz, tags jsonb NOT NULL DEFAULT '{}',
    dataset_fingerprint text, code_version text
);
CREATE TABLE params (run_id text, key text, value text, PRIMARY KEY (run_id, key));
CREATE TABLE latest_metrics (
    run_id text, key text, value double precision, step bigint, timestamp timestamptz,
    PRIMARY KEY (run_id, key)
);
"""

JAN_1 = datetime(2024, 1, 1, tzinfo=UTC)
# id, experiment, name, status, days after Jan 1 it started, tags, params, metrics
RUNS = [
    ("r1", "exp-1", "rf-base", "finished", 0, {"team": "risk"}, {"model": "rf"}, {"auc": 0.85}),
    ("r2", "exp-1", "rf-tuned", "finished", 1, {"team": "fraud"}, {"model": "rf"}, {"auc": 0.9}),
    ("r3", "exp-1", "gb-v1", "failed", 2, {"team": "risk"}, {"model": "gb"}, {"auc": 0.75, "f1 score": 0.7}),
    ("r4", "exp-1", "GB-v2", "running", 3, {}, {}, {}),
    ("r5", "exp-1", "lr", "killed", 4, {"team": "risk", "owner": "ana"}, {"model": "lr"}, {"auc": 0.82}),
    ("r6", "exp-2", "rf-elsewhere", "finished", 5, {"team": "risk"}, {"model": "rf"}, {"auc": 0.95}),
]


@pytest.fixture
async def runs_database(fresh_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(fresh_database_url)
    await connection.execute(TABLES)
    for run_id, experiment_id, name, status, day, tags, params, metrics in RUNS:
        start = JAN_1 + timedelta(days=day)
        end = None if status == "running" else start + timedelta(hours=1)
        await connection.execute(
            "INSERT INTO runs (id, experiment_id, name, status, start_time, end_time, tags) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)",
            *(run_id, experiment_id, name, status, start, end, json.dumps(tags)),
        )
        await connection.executemany(
            "INSERT INTO params (run_id, key, value) VALUES ($1, $2, $3)",
            [(run_id, key, value) for key, value in params.items()],
        )
        await connection.executemany(
            "INSERT INTO latest_metrics (run_id, key, value, step, timestamp) VALUES ($1, $2, $3, 0, $4)",
            [(run_id, key, value, start) for key, value in metrics.items()],
        )
    yield connection
    await connection.close()


async def search(connection: asyncpg.Connection, filter_text: str, order_by: list[str]) -> list[str]:
    """Run ids of experiment exp-1 matching the filter, with the caller's own $1 before the compiled ones."""
    compiled = compile_search(filter_text, order_by, first_placeholder=2)
    query = (
        f"SELECT r.id FROM runs r WHERE r.experiment_id = $1 AND ({compiled.where}) "
        f"ORDER BY {compiled.order_by}"
    )
    rows = await connection.fetch(query, "exp-1", *compiled.args)
    return [row["id"] for row in rows]


@pytest.mark.parametrize(
    ("filter_text", "order_by", "expected"),
    [
        ("", [], ["r5", "r4", "r3", "r2", "r1"]),
        ("metrics.auc > 0.8 and params.model = 'rf' and tags.team = 'risk'", [], ["r1"]),
        ("(params.model = 'gb' or tags.team = 'fraud') and status != 'failed'", [], ["r2"]),
        ("params.model = 'gb' or tags.team = 'fraud' and status != 'failed'", [], ["r3", "r2"]),
        ("params.model IN ('gb', 'lr')", [], ["r5", "r3"]),
        ("params.model != 'rf'", [], ["r5", "r3"]),
        ("params.model NOT IN ('rf', 'lr')", [], ["r3"]),
        ("tags.owner != 'bob'", [], ["r5"]),
        ("name LIKE 'rf-%'", [], ["r2", "r1"]),
        ("run_name ILIKE 'gb-%'", [], ["r4", "r3"]),
        ("metrics.`f1 score` >= 0.7", [], ["r3"]),
        ("start_time >= '2024-01-03T00:00:00Z'", [], ["r5", "r4", "r3"]),
        ("start_time < 1704153600000", [], ["r1"]),
        ("end_time > 0", [], ["r5", "r3", "r2", "r1"]),
        ("", ["metrics.auc DESC"], ["r2", "r1", "r5", "r3", "r4"]),
        ("", ["metrics.auc"], ["r3", "r5", "r1", "r2", "r4"]),
        ("", ["tags.team", "name DESC"], ["r2", "r1", "r5", "r3", "r4"]),
        ("status IN ('finished', 'failed')", ["params.model DESC"], ["r2", "r1", "r3"]),
    ],
)
async def test_compiled_search_selects_and_orders_the_expected_runs(
    runs_database: asyncpg.Connection, filter_text: str, order_by: list[str], expected: list[str]
) -> None:
    assert await search(runs_database, filter_text, order_by) == expected
