"""SQL for training jobs."""

from __future__ import annotations

from typing import Any

import asyncpg

from services.trainer.schemas import Job
from shared.db import Connection

JOB_COLUMNS = (
    "id, model_name, workspace, status, stage, progress, reason, request, run_id, error, problems, result, "
    "attempts, created_at, started_at, finished_at"
)


def _job(row: asyncpg.Record | None) -> Job | None:
    return Job(**dict(row)) if row else None


async def insert_job(
    connection: Connection, job_id: str, model_name: str, reason: str, request: dict[str, Any], workspace: str
) -> Job:
    row = await connection.fetchrow(
        "INSERT INTO jobs (id, model_name, status, reason, request, workspace) "
        f"VALUES ($1, $2, 'queued', $3, $4, $5) RETURNING {JOB_COLUMNS}",
        job_id,
        model_name,
        reason,
        request,
        workspace,
    )
    job = _job(row)
    assert job is not None
    return job


async def active_job_for_model(connection: Connection, model_name: str) -> Job | None:
    """The model's job that is queued or running, if any."""
    return _job(
        await connection.fetchrow(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE model_name = $1 AND status IN ('queued', 'running') "
            "ORDER BY created_at LIMIT 1",
            model_name,
        )
    )


async def claim_job(connection: Connection, job_id: str, worker: str) -> Job | None:
    """Take a queued job for this replica; None when another replica has it or it is done."""
    return _job(
        await connection.fetchrow(
            f"""
        UPDATE jobs SET status = 'running', stage = 'starting', attempts = attempts + 1, worker = $2,
               started_at = coalesce(started_at, now()), heartbeat_at = now()
        WHERE id = $1 AND status = 'queued' RETURNING {JOB_COLUMNS}
        """,
            job_id,
            worker,
        )
    )


async def report_progress(connection: Connection, job_id: str, stage: str, progress: float) -> None:
    await connection.execute(
        "UPDATE jobs SET stage = $2, progress = $3, heartbeat_at = now() "
        "WHERE id = $1 AND status = 'running'",
        job_id,
        stage,
        progress,
    )


async def heartbeat(connection: Connection, job_id: str) -> None:
    await connection.execute(
        "UPDATE jobs SET heartbeat_at = now() WHERE id = $1 AND status = 'running'", job_id
    )


async def set_run(connection: Connection, job_id: str, run_id: str) -> None:
    await connection.execute("UPDATE jobs SET run_id = $2 WHERE id = $1", job_id, run_id)


async def finish_job(
    connection: Connection,
    job_id: str,
    *,
    status: str,
    error: str | None,
    problems: list[str],
    result: dict[str, Any] | None,
) -> None:
    await connection.execute(
        """
        UPDATE jobs SET status = $2, stage = $2,
               progress = CASE WHEN $2 = 'succeeded' THEN 1 ELSE progress END,
               error = $3, problems = $4, result = $5, finished_at = now()
        WHERE id = $1
        """,
        job_id,
        status,
        error,
        problems,
        result,
    )


async def get_job(connection: Connection, job_id: str, workspace: str | None = None) -> Job | None:
    """The job, in `workspace` (None: in any)."""
    return _job(
        await connection.fetchrow(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 AND ($2::text IS NULL OR workspace = $2)",
            job_id,
            workspace,
        )
    )


async def job_of_run(connection: Connection, run_id: str) -> Job | None:
    return _job(await connection.fetchrow(f"SELECT {JOB_COLUMNS} FROM jobs WHERE run_id = $1", run_id))


async def list_jobs(
    connection: Connection, model_name: str | None, limit: int, offset: int, workspace: str | None = None
) -> list[Job]:
    rows = await connection.fetch(
        f"SELECT {JOB_COLUMNS} FROM jobs WHERE ($1::text IS NULL OR model_name = $1) "
        "AND ($4::text IS NULL OR workspace = $4) ORDER BY created_at DESC, id LIMIT $2 OFFSET $3",
        model_name,
        limit,
        offset,
        workspace,
    )
    return [Job(**dict(row)) for row in rows]


async def stale_jobs(connection: Connection, silent_seconds: float) -> list[tuple[str, str, int]]:
    """(id, model name, attempts) of running jobs whose replica stopped sending heartbeats; locked."""
    rows = await connection.fetch(
        "SELECT id, model_name, attempts FROM jobs WHERE status = 'running' "
        "AND heartbeat_at < now() - make_interval(secs => $1) FOR UPDATE SKIP LOCKED",
        silent_seconds,
    )
    return [(row["id"], row["model_name"], row["attempts"]) for row in rows]


async def requeue(connection: Connection, job_id: str) -> None:
    await connection.execute(
        "UPDATE jobs SET status = 'queued', stage = 'queued', worker = NULL WHERE id = $1", job_id
    )
