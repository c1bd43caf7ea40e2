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
    dataset_fingerprint text, code_version text,
    params jsonb NOT NULL DEFAULT '{}', metrics jsonb NOT NULL DEFAULT '{}'
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
    # Metric values that are no jsonb numbers (NaN, infinities), and a negative zero.
    ("n1", "exp-3", "nan", "finished", 0, {}, {}, {"loss": float("nan")}),
    ("n2", "exp-3", "inf", "finished", 1, {}, {}, {"loss": float("inf")}),
    ("n3", "exp-3", "-inf", "finished", 2, {}, {}, {"loss": float("-inf")}),
    ("n4", "exp-3", "zero", "finished", 3, {}, {}, {"loss": -0.0}),
    ("n5", "exp-3", "some", "finished", 4, {}, {}, {"loss": 0.7}),
    ("n6", "exp-3", "none", "finished", 5, {}, {}, {}),
]
# The run's copies of its params and last metric values, as log_run_batch writes them (migration 0007).
COPY_RUN_VALUES = """
UPDATE runs r SET
    params = coalesce((SELECT jsonb_object_agg(p.key, p.value) FROM params p WHERE p.run_id = r.id), '{}'),
    metrics = coalesce(
        (SELECT jsonb_object_agg(m.key, m.value) FROM latest_metrics m WHERE m.run_id = r.id), '{}')
"""


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
    await connection.execute(COPY_RUN_VALUES)
    yield connection
    await connection.close()


async def search(
    connection: asyncpg.Connection, filter_text: str, order_by: list[str], experiment: str = "exp-1"
) -> list[str]:
    """Run ids of the experiment matching the filter, with the caller's own $1 before the compiled ones;
    the same whether the compiled filter reads the key-value tables or each run's copies."""
    found = []
    for within_experiments in (False, True):
        compiled = compile_search(
            filter_text, order_by, first_placeholder=2, within_experiments=within_experiments
        )
        query = (
            f"SELECT r.id FROM runs r WHERE r.experiment_id = $1 AND ({compiled.where}) "
            f"ORDER BY {compiled.order_by}"
        )
        rows = await connection.fetch(query, experiment, *compiled.args)
        found.append([row["id"] for row in rows])
    assert found[0] == found[1], "the tables and the run's copies disagree"
    return found[0]


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


@pytest.mark.parametrize(
    ("filter_text", "order_by", "expected"),
    [
        ("metrics.loss > 0.5", ["metrics.loss DESC"], ["n1", "n2", "n5"]),
        ("metrics.loss < 1", ["metrics.loss"], ["n3", "n4", "n5"]),
        ("metrics.loss = 0", [], ["n4"]),
        ("metrics.loss != 0.7", ["metrics.loss"], ["n3", "n4", "n2", "n1"]),
        ("", ["metrics.loss DESC"], ["n1", "n2", "n5", "n4", "n3", "n6"]),
    ],
)
async def test_nan_infinities_and_missing_metrics_compare_and_sort_as_postgresql_floats(
    runs_database: asyncpg.Connection, filter_text: str, order_by: list[str], expected: list[str]
) -> None:
    assert await search(runs_database, filter_text, order_by, experiment="exp-3") == expected
