"""SQL for file jobs. Every write a runner makes names the replica that holds the job, so a replica that
lost it (taken for dead, and the job given to another) can no longer move it."""

from __future__ import annotations

from typing import Any

import asyncpg

from services.batch.file_jobs import FileFormat
from services.batch.job_schemas import FileJob
from shared.db import Connection

PUBLIC_COLUMNS = (
    "id, status, stage, progress, model, workspace, model_version, alias, input_uri, output_uri, format, "
    "features, rows_total, rows_scored, rows_rejected, rows_logged, rejections, error, attempts, "
    "resumed_at_row, output_sha256, output_bytes, created_at, started_at, finished_at"
)
RUNNER_COLUMNS = f"{PUBLIC_COLUMNS}, chunk_rows, chunks_done"


class OutputTaken(Exception):
    """Another job that is queued or running writes the same output."""


class ClaimedJob(FileJob):
    """A job as its runner sees it: how it is cut into chunks, and how many are done."""

    chunk_rows: int
    chunks_done: int


def _job(row: asyncpg.Record | None) -> FileJob | None:
    return FileJob(**dict(row)) if row else None


async def insert_job(
    connection: Connection,
    *,
    job_id: str,
    model: str,
    model_version: int,
    alias: str | None,
    input_uri: str,
    output_uri: str,
    file_format: str,
    features: list[str] | None,
    chunk_rows: int,
    workspace: str,
) -> FileJob:
    try:
        row = await connection.fetchrow(
            f"""
            INSERT INTO file_jobs (id, status, model, model_version, alias, input_uri, output_uri, format,
                                   features, chunk_rows, workspace)
            VALUES ($1, 'queued', $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {PUBLIC_COLUMNS}
            """,
            job_id,
            model,
            model_version,
            alias,
            input_uri,
            output_uri,
            file_format,
            features,
            chunk_rows,
            workspace,
        )
    except asyncpg.UniqueViolationError as error:
        raise OutputTaken(output_uri) from error
    job = _job(row)
    assert job is not None
    return job


async def get_job(connection: Connection, job_id: str, workspace: str | None = None) -> FileJob | None:
    """The job, in `workspace` (None: in any)."""
    return _job(
        await connection.fetchrow(
            f"SELECT {PUBLIC_COLUMNS} FROM file_jobs WHERE id = $1 AND ($2::text IS NULL OR workspace = $2)",
            job_id,
            workspace,
        )
    )


async def job_writing(connection: Connection, output_uri: str) -> str | None:
    """The id of the queued or running job that writes `output_uri`, if any."""
    found: str | None = await connection.fetchval(
        "SELECT id FROM file_jobs WHERE output_uri = $1 AND status IN ('queued', 'running')", output_uri
    )
    return found


async def list_jobs(
    connection: Connection,
    model: str | None,
    status: str | None,
    limit: int,
    offset: int,
    workspace: str | None = None,
) -> list[FileJob]:
    rows = await connection.fetch(
        f"SELECT {PUBLIC_COLUMNS} FROM file_jobs "
        "WHERE ($1::text IS NULL OR model = $1) AND ($2::text IS NULL OR status = $2) "
        "AND ($5::text IS NULL OR workspace = $5) ORDER BY created_at DESC, id LIMIT $3 OFFSET $4",
        model,
        status,
        limit,
        offset,
        workspace,
    )
    return [FileJob(**dict(row)) for row in rows]


async def claim_next(connection: Connection, worker: str) -> ClaimedJob | None:
    """Take the oldest queued job for `worker`; None when none is waiting. A job that had chunks done
    records the row it goes on from."""
    row = await connection.fetchrow(
        f"""
        UPDATE file_jobs SET status = 'running', stage = 'starting', attempts = attempts + 1, worker = $1,
               started_at = coalesce(started_at, now()), heartbeat_at = now(),
               resumed_at_row = CASE WHEN chunks_done > 0 THEN chunks_done::bigint * chunk_rows
                                     ELSE resumed_at_row END
        WHERE id = (SELECT id FROM file_jobs WHERE status = 'queued' ORDER BY created_at, id
                    LIMIT 1 FOR UPDATE SKIP LOCKED)
        RETURNING {RUNNER_COLUMNS}
        """,
        worker,
    )
    return ClaimedJob(**dict(row)) if row else None


async def set_stage(connection: Connection, job_id: str, worker: str, stage: str) -> bool:
    """False when `worker` no longer holds the job."""
    result = await connection.execute(
        "UPDATE file_jobs SET stage = $3, heartbeat_at = now() "
        "WHERE id = $1 AND worker = $2 AND status = 'running'",
        job_id,
        worker,
        stage,
    )
    return result != "UPDATE 0"


async def record_chunk(
    connection: Connection,
    job_id: str,
    worker: str,
    *,
    chunks_done: int,
    scored: int,
    rejected: int,
    logged: int,
    rejections: list[dict[str, Any]],
    progress: float,
    rows_total: int | None,
) -> bool:
    """Count a chunk whose part is stored; False when `worker` no longer holds the job."""
    result = await connection.execute(
        """
        UPDATE file_jobs SET chunks_done = $3, rows_scored = rows_scored + $4,
               rows_rejected = rows_rejected + $5, rows_logged = rows_logged + $6,
               rejections = rejections || $7::jsonb, progress = $8,
               rows_total = coalesce($9, rows_total), heartbeat_at = now()
        WHERE id = $1 AND worker = $2 AND status = 'running' AND chunks_done = $3 - 1
        """,
        job_id,
        worker,
        chunks_done,
        scored,
        rejected,
        logged,
        rejections,
        progress,
        rows_total,
    )
    return result != "UPDATE 0"


async def heartbeat(connection: Connection, job_id: str, worker: str) -> None:
    await connection.execute(
        "UPDATE file_jobs SET heartbeat_at = now() WHERE id = $1 AND worker = $2 AND status = 'running'",
        job_id,
        worker,
    )


async def succeed(
    connection: Connection,
    job_id: str,
    worker: str,
    *,
    output_sha256: str,
    output_bytes: int,
    rows_total: int,
) -> bool:
    result = await connection.execute(
        """
        UPDATE file_jobs SET status = 'succeeded', stage = 'succeeded', progress = 1, output_sha256 = $3,
               output_bytes = $4, rows_total = $5, worker = NULL, finished_at = now()
        WHERE id = $1 AND worker = $2 AND status = 'running'
        """,
        job_id,
        worker,
        output_sha256,
        output_bytes,
        rows_total,
    )
    return result != "UPDATE 0"


async def fail(connection: Connection, job_id: str, worker: str | None, error: str) -> bool:
    """Fail the job (held by `worker`, or by anyone when None)."""
    result = await connection.execute(
        """
        UPDATE file_jobs SET status = 'failed', stage = 'failed', error = $3, worker = NULL,
               finished_at = now()
        WHERE id = $1 AND ($2::text IS NULL OR worker = $2) AND status IN ('queued', 'running')
        """,
        job_id,
        worker,
        error,
    )
    return result != "UPDATE 0"


async def release(connection: Connection, job_id: str, worker: str, stage: str) -> None:
    """Give a job back to the queue without counting the start (its replica is stopping, or it waits on
    a dependency); it goes on from its last completed chunk."""
    await connection.execute(
        """
        UPDATE file_jobs SET status = 'queued', stage = $3, worker = NULL,
               attempts = greatest(attempts - 1, 0)
        WHERE id = $1 AND worker = $2 AND status = 'running'
        """,
        job_id,
        worker,
        stage,
    )


async def release_all(connection: Connection, worker: str, stage: str) -> list[str]:
    """`release` every job `worker` holds; their ids."""
    rows = await connection.fetch(
        """
        UPDATE file_jobs SET status = 'queued', stage = $2, worker = NULL,
               attempts = greatest(attempts - 1, 0)
        WHERE worker = $1 AND status = 'running' RETURNING id
        """,
        worker,
        stage,
    )
    return [row["id"] for row in rows]


async def stale_jobs(connection: Connection, silent_seconds: float) -> list[tuple[str, int, FileFormat]]:
    """(id, attempts, format) of running jobs whose replica stopped sending heartbeats; locked for the
    caller's transaction."""
    rows = await connection.fetch(
        "SELECT id, attempts, format FROM file_jobs WHERE status = 'running' "
        "AND heartbeat_at < now() - make_interval(secs => $1) FOR UPDATE SKIP LOCKED",
        silent_seconds,
    )
    return [(row["id"], row["attempts"], row["format"]) for row in rows]


async def requeue(connection: Connection, job_id: str) -> None:
    await connection.execute(
        "UPDATE file_jobs SET status = 'queued', stage = 'queued again', worker = NULL WHERE id = $1", job_id
    )


async def parts_cleared(connection: Connection, job_id: str) -> None:
    """A finished job's parts are deleted: `chunks_done` of a finished job counts the parts left."""
    await connection.execute(
        "UPDATE file_jobs SET chunks_done = 0 WHERE id = $1 AND status IN ('succeeded', 'failed')", job_id
    )


async def finished_with_parts(connection: Connection, limit: int) -> list[tuple[str, FileFormat, int]]:
    """(id, format, chunks done) of finished jobs whose parts are still stored (their deletion was cut
    short by a stop or a crash)."""
    rows = await connection.fetch(
        "SELECT id, format, chunks_done FROM file_jobs "
        "WHERE status IN ('succeeded', 'failed') AND chunks_done > 0 LIMIT $1",
        limit,
    )
    return [(row["id"], row["format"], row["chunks_done"]) for row in rows]


async def parts_written(connection: Connection, job_id: str) -> int:
    """How many chunks of the job have their part stored (parts to delete once it ends)."""
    count: int = await connection.fetchval("SELECT chunks_done FROM file_jobs WHERE id = $1", job_id) or 0
    return count
