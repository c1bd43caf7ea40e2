"""SQL for experiment tracking: experiments, runs, params, metrics and run artifacts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
import orjson
from pydantic import TypeAdapter

from services.registry.schemas import (
    Artifact,
    ComparedRun,
    Experiment,
    MetricPoint,
    Param,
    Run,
)
from shared.db import Connection

# A run with its params and last metric values: copies kept on the run's row by log_run_batch
# (migration 0007), so reading runs aggregates nothing. The JSON columns come as text, for _run_fields.
RUN_COLUMNS = (
    "r.id, r.experiment_id, r.name, r.status, r.start_time, r.end_time, r.tags::text AS tags, "
    "r.dataset_fingerprint, r.code_version, r.params::text AS params, r.metrics::text AS metrics"
)


def _run_fields(row: asyncpg.Record) -> dict[str, Any]:
    """A row of RUN_COLUMNS as a Run's fields, its JSON objects read by orjson alone. shared.db's codec
    also walks each value for huge whole numbers, to read them as json.loads does: that cannot change a
    Run (tags and params hold strings, metrics become floats), and in a 55-run search the walk and the
    codec's calls cost 0.05-0.09 ms."""
    fields = dict(row)
    for column in ("tags", "params", "metrics"):
        fields[column] = orjson.loads(fields[column])
    return fields


EXPERIMENT_COLUMNS = "id, name, workspace, description, tags, created_at, updated_at"

# Runs read many at a time are validated in one call: a Run(...) each cost ~4 µs more a run.
_RUNS = TypeAdapter(list[Run])


def _experiment(row: asyncpg.Record) -> Experiment:
    return Experiment(**dict(row))


async def insert_experiment(
    connection: Connection,
    experiment_id: str,
    name: str,
    description: str,
    tags: dict[str, str],
    workspace: str,
) -> Experiment | None:
    """The new experiment, or None when the name is taken (in any workspace: names are unique)."""
    row = await connection.fetchrow(
        f"""
        INSERT INTO experiments (id, name, description, tags, workspace) VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (name) DO NOTHING
        RETURNING {EXPERIMENT_COLUMNS}
        """,
        experiment_id,
        name,
        description,
        tags,
        workspace,
    )
    return _experiment(row) if row else None


async def get_experiment(
    connection: Connection,
    *,
    experiment_id: str | None = None,
    name: str | None = None,
    workspace: str | None = None,
) -> Experiment | None:
    """By id or name, in `workspace` (None: in any)."""
    row = await connection.fetchrow(
        f"""
        SELECT {EXPERIMENT_COLUMNS} FROM experiments
        WHERE ($1::text IS NULL OR id = $1) AND ($2::text IS NULL OR name = $2)
          AND ($3::text IS NULL OR workspace = $3)
        """,
        experiment_id,
        name,
        workspace,
    )
    return _experiment(row) if row else None


async def list_experiments(
    connection: Connection, limit: int, offset: int, workspace: str | None
) -> list[Experiment]:
    rows = await connection.fetch(
        f"""
        SELECT {EXPERIMENT_COLUMNS} FROM experiments WHERE $3::text IS NULL OR workspace = $3
        ORDER BY created_at DESC, id LIMIT $1 OFFSET $2
        """,
        limit,
        offset,
        workspace,
    )
    return [_experiment(row) for row in rows]


async def update_experiment(
    connection: Connection,
    experiment_id: str,
    description: str | None,
    tags: dict[str, str] | None,
    workspace: str | None,
) -> Experiment | None:
    row = await connection.fetchrow(
        f"""
        UPDATE experiments SET description = coalesce($2, description),
               tags = tags || coalesce($3::jsonb, '{{}}'::jsonb),
               updated_at = now()
        WHERE id = $1 AND ($4::text IS NULL OR workspace = $4) RETURNING {EXPERIMENT_COLUMNS}
        """,
        experiment_id,
        description,
        tags,
        workspace,
    )
    return _experiment(row) if row else None


async def delete_experiment(connection: Connection, experiment_id: str, workspace: str | None) -> bool:
    """Delete the experiment, its runs and everything logged to them; False when there is none."""
    if await get_experiment(connection, experiment_id=experiment_id, workspace=workspace) is None:
        return False
    await connection.execute(
        "DELETE FROM metrics WHERE run_id IN (SELECT id FROM runs WHERE experiment_id = $1)", experiment_id
    )
    return (
        await connection.fetchval("DELETE FROM experiments WHERE id = $1 RETURNING true", experiment_id)
        is True
    )


async def insert_run(
    connection: Connection,
    *,
    run_id: str,
    experiment_id: str,
    name: str,
    status: str,
    start_time: datetime,
    tags: dict[str, str],
    dataset_fingerprint: str | None,
    code_version: str | None,
    workspace: str | None = None,
) -> Run | None:
    """The new run; None when the experiment does not exist in `workspace` (None: in any), or a run has
    that id already."""
    row = await connection.fetchrow(
        f"""
        INSERT INTO runs AS r (id, experiment_id, name, status, start_time, tags, dataset_fingerprint,
                               code_version)
        SELECT $1, e.id, $3, $4, $5, $6, $7, $8 FROM experiments e
        WHERE e.id = $2 AND ($9::text IS NULL OR e.workspace = $9)
        ON CONFLICT (id) DO NOTHING RETURNING {RUN_COLUMNS}
        """,
        run_id,
        experiment_id,
        name,
        status,
        start_time,
        tags,
        dataset_fingerprint,
        code_version,
        workspace,
    )
    return Run(**_run_fields(row)) if row else None


async def update_run(
    connection: Connection,
    run_id: str,
    status: str | None,
    end_time: datetime | None,
    name: str | None,
    workspace: str | None,
) -> Run | None:
    """The updated run; None when there is no such run in `workspace` (None: in any)."""
    row = await connection.fetchrow(
        f"""
        UPDATE runs AS r SET status = coalesce($2, status), end_time = coalesce($3, end_time),
               name = coalesce($4, name)
        WHERE id = $1
          AND ($5::text IS NULL OR experiment_id IN (SELECT id FROM experiments WHERE workspace = $5))
        RETURNING {RUN_COLUMNS}
        """,
        run_id,
        status,
        end_time,
        name,
        workspace,
    )
    return Run(**_run_fields(row)) if row else None


async def finish_run(
    connection: Connection, run_id: str, status: str, end_time: datetime, dataset_fingerprint: str | None
) -> None:
    """Set the final status; the first end time and fingerprint recorded are kept."""
    await connection.execute(
        """
        UPDATE runs SET status = $2, end_time = coalesce(end_time, $3),
               dataset_fingerprint = coalesce(dataset_fingerprint, $4)
        WHERE id = $1
        """,
        run_id,
        status,
        end_time,
        dataset_fingerprint,
    )


async def delete_run(connection: Connection, run_id: str) -> bool:
    """Delete the run and everything logged to it; False when there is none. The metric history has no
    foreign key (it would cost a check per logged point), so it is deleted here."""
    await connection.execute("DELETE FROM metrics WHERE run_id = $1", run_id)
    return await connection.fetchval("DELETE FROM runs WHERE id = $1 RETURNING true", run_id) is True


async def lock_run(connection: Connection, run_id: str) -> bool:
    """Lock the run's row for this transaction; False when there is no such run."""
    return await connection.fetchval("SELECT true FROM runs WHERE id = $1 FOR UPDATE", run_id) is True


class RunNotFound(LookupError):
    pass


class ParamConflict(ValueError):
    pass


async def log_batch(
    connection: Connection,
    run_id: str,
    params: list[Param],
    points: list[MetricPoint],
    tags: dict[str, str],
    now: datetime,
    workspace: str | None,
) -> None:
    """Store params, metric points and tags with `log_run_batch` (migration 0008): one round trip, all or
    nothing. RunNotFound for a run unknown in `workspace` (None: in any); ParamConflict names a param
    logged earlier with another value."""
    try:
        await connection.execute(
            "SELECT log_run_batch($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            run_id,
            workspace,
            [param.key for param in params],
            [param.value for param in params],
            [point.key for point in points],
            [point.value for point in points],
            [point.step for point in points],
            [point.timestamp or now for point in points],
            tags,
        )
    except asyncpg.PostgresError as error:
        if error.sqlstate == "FW404":
            raise RunNotFound(error.args[0]) from error
        if error.sqlstate == "FW409":
            raise ParamConflict(error.args[0]) from error
        raise


async def fetch_runs(
    connection: Connection, where: str, order_by: str, args: list[Any], limit: int, offset: int
) -> list[Run]:
    """Runs matching a compiled condition (placeholders from $3 on), with their params and last metrics."""
    rows = await connection.fetch(
        f"SELECT {RUN_COLUMNS} FROM runs r WHERE {where} ORDER BY {order_by} LIMIT $1 OFFSET $2",
        limit,
        offset,
        *args,
    )
    return _RUNS.validate_python([_run_fields(row) for row in rows])


async def get_run(connection: Connection, run_id: str) -> Run | None:
    row = await connection.fetchrow(f"SELECT {RUN_COLUMNS} FROM runs r WHERE r.id = $1", run_id)
    return Run(**_run_fields(row)) if row else None


async def get_runs(connection: Connection, run_ids: list[str]) -> list[Run]:
    rows = await connection.fetch(f"SELECT {RUN_COLUMNS} FROM runs r WHERE r.id = ANY($1::text[])", run_ids)
    return _RUNS.validate_python([_run_fields(row) for row in rows])


async def runs_in_workspace(connection: Connection, run_ids: list[str], workspace: str) -> set[str]:
    """Which of these runs exist in `workspace` (through their experiment)."""
    rows = await connection.fetch(
        "SELECT r.id FROM runs r JOIN experiments e ON e.id = r.experiment_id "
        "WHERE r.id = ANY($1::text[]) AND e.workspace = $2",
        run_ids,
        workspace,
    )
    return {row["id"] for row in rows}


async def run_workspace(connection: Connection, run_id: str) -> str | None:
    """The workspace of the run's experiment; None when there is no such run."""
    workspace: str | None = await connection.fetchval(
        "SELECT e.workspace FROM runs r JOIN experiments e ON e.id = r.experiment_id WHERE r.id = $1", run_id
    )
    return workspace


def compared(run: Run) -> ComparedRun:
    return ComparedRun(
        id=run.id,
        name=run.name,
        experiment_id=run.experiment_id,
        status=run.status,
        params=run.params,
        metrics=run.metrics,
    )


async def metric_history(connection: Connection, run_id: str, key: str) -> list[MetricPoint]:
    rows = await connection.fetch(
        "SELECT key, value, step, timestamp FROM metrics WHERE run_id = $1 AND key = $2 "
        "ORDER BY step, timestamp",
        run_id,
        key,
    )
    return [MetricPoint(**dict(row)) for row in rows]


async def upsert_artifact(connection: Connection, artifact: Artifact) -> None:
    await connection.execute(
        """
        INSERT INTO run_artifacts (run_id, path, uri, size, sha256, content_type, created_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        ON CONFLICT (run_id, path) DO UPDATE SET uri = excluded.uri, size = excluded.size,
            sha256 = excluded.sha256, content_type = excluded.content_type, created_at = excluded.created_at
        """,
        artifact.run_id,
        artifact.path,
        artifact.uri,
        artifact.size,
        artifact.sha256,
        artifact.content_type,
        artifact.created_at,
    )


async def list_artifacts(connection: Connection, run_id: str) -> list[Artifact]:
    rows = await connection.fetch(
        "SELECT run_id, path, uri, size, sha256, content_type, created_at FROM run_artifacts "
        "WHERE run_id = $1 ORDER BY path",
        run_id,
    )
    return [Artifact(**dict(row)) for row in rows]


async def get_artifact(connection: Connection, run_id: str, path: str) -> Artifact | None:
    row = await connection.fetchrow(
        "SELECT run_id, path, uri, size, sha256, content_type, created_at FROM run_artifacts "
        "WHERE run_id = $1 AND path = $2",
        run_id,
        path,
    )
    return Artifact(**dict(row)) if row else None
