"""Runs file jobs in the background, at most `max_concurrent_jobs` at once per worker process.

A job is claimed from the table (one replica wins), its input downloaded to a temporary file and read
chunk by chunk: each chunk is scored, its share of the output stored as a part object, a sample of its
rows reported to prediction-logged, and only then counted done in the table. When every chunk is done
the parts are joined into the output file (whole or not at all) and deleted.

Jobs survive their service: a replica that stops cleanly gives its jobs back to the queue, and a job
whose replica stops sending heartbeats (killed, or its machine gone) is queued again by any replica.
Either way the job goes on from its last completed chunk, and fails with the reason after
`max_job_attempts` starts that did not finish. A job never stays `running` without a live replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import numpy as np
import pyarrow as pa
from fastapi import FastAPI

from services.batch import job_repository
from services.batch.file_jobs import (
    CONTENT_TYPES,
    PART_SUFFIXES,
    FileFormat,
    InputTable,
    OutputLayout,
    ParquetAssembly,
    TableError,
    encode_part,
    feature_arrays,
    feature_columns,
    fixed_chunks,
    job_seed,
    open_table,
    sample_rows,
)
from services.batch.job_repository import ClaimedJob
from services.batch.job_service import FileJobService
from services.batch.scoring import ModelRef, ScoredRows, ScoringModels, ScoringVersion, takes_feature_inputs
from services.batch.settings import BatchSettings
from shared.artifacts import ArtifactNotFound, ArtifactStore, InvalidArtifactKey, ObjectInfo
from shared.bus import EventBus
from shared.events import Topic
from shared.heartbeat import heartbeat
from shared.model_versions import ModelNotFound, ModelUnavailable, RegistryUnavailable
from shared.prediction_events import events_that_fit, logged_request, prediction_logged_json
from shared.service import Runtime
from shared.tensors import InvalidInput

log = logging.getLogger(__name__)

EVENT_SOURCE = "/flywheel/batch"
KEPT_REJECTIONS = 100  # rejected rows whose reason a job keeps; all are counted
LOGGED_ROWS_PER_EVENT = 500  # rows encoded at once (then halved while an event is too large for Kafka)
PUBLISH_TIMEOUT_SECONDS = 10.0
PARTS_PREFIX = "batch/jobs"
SWEPT_JOBS = 10  # finished jobs whose leftover parts one recovery pass deletes


class JobFailed(Exception):
    """The job cannot complete; the message says why, for the job's `error`."""


class JobLost(Exception):
    """Another replica holds the job now (this one was taken for dead): stop without touching it."""


def part_key(job_id: str, index: int, fmt: FileFormat) -> str:
    return f"{PARTS_PREFIX}/{job_id}/parts/{index:06d}.{PART_SUFFIXES[fmt]}"


class FileJobRunner:
    def __init__(
        self,
        database: asyncpg.Pool,
        artifacts: ArtifactStore,
        bus: EventBus,
        models: ScoringModels,
        settings: BatchSettings,
    ) -> None:
        self.database = database
        self.artifacts = artifacts
        self.bus = bus
        self.models = models
        self.settings = settings
        self.worker = f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
        self.running: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(settings.max_concurrent_jobs)
        self._wake = asyncio.Event()
        self._background: list[asyncio.Task[None]] = []

    def wake(self) -> None:
        """A job was queued here: look for it now rather than at the next poll."""
        self._wake.set()

    async def start(self) -> None:
        self._background = [
            asyncio.create_task(self._recover_forever(), name="file-jobs-recovery"),
            asyncio.create_task(self._dispatch_forever(), name="file-jobs-dispatch"),
        ]

    async def stop(self) -> None:
        """Stop taking jobs; jobs in flight stop and go back to the queue, to go on from their last
        completed chunk when a replica takes them."""
        for task in [*self._background, *self.running]:
            task.cancel()
        for task in [*self._background, *self.running]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        async with self.database.acquire() as connection:
            released = await job_repository.release_all(
                connection, self.worker, "queued: its service stopped"
            )
        if released:
            log.info("file jobs given back to the queue", extra={"jobs": released})
        with contextlib.suppress(Exception):  # best effort: the next replica sweeps too
            await self.sweep_parts()

    async def _dispatch_forever(self) -> None:
        while True:
            await self._slots.acquire()
            try:
                async with self.database.acquire() as connection:
                    job = await job_repository.claim_next(connection, self.worker)
            except Exception:
                log.exception("claiming a file job failed; retrying")
                job = None
            if job is None:
                self._slots.release()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.job_poll_seconds):
                        await self._wake.wait()
                self._wake.clear()
                continue
            task = asyncio.create_task(self._run(job), name=f"file-job:{job.id}")
            self.running.add(task)
            task.add_done_callback(self.running.discard)

    async def _run(self, job: ClaimedJob) -> None:
        try:
            await self.run(job)
        finally:
            self._slots.release()

    async def run(self, job: ClaimedJob) -> None:
        """Run a claimed job to its end; never raises for the job's own failures."""
        if job.resumed_at_row:
            log.info("file job goes on", extra={"job_id": job.id, "row": job.resumed_at_row})
        try:
            async with heartbeat(
                lambda: self._beat(job.id), self.settings.job_heartbeat_seconds, f"heartbeat:{job.id}"
            ):
                await _JobRun(self, job).run()
        except JobLost:
            log.warning("file job taken over by another replica", extra={"job_id": job.id})
        except RegistryUnavailable as error:  # not the job's fault: it waits in the queue
            log.warning("file job waits for the registry", extra={"job_id": job.id, "error": str(error)})
            await asyncio.sleep(self.settings.job_poll_seconds)
            async with self.database.acquire() as connection:
                await job_repository.release(
                    connection, job.id, self.worker, "queued: waiting for the registry"
                )
        except (JobFailed, TableError, InvalidInput, ModelNotFound, ModelUnavailable) as error:
            await self.fail(job.id, job.format, str(error), holder=self.worker)
        except Exception as error:  # a bug or a dependency down: the job must not stay running
            log.exception("file job crashed", extra={"job_id": job.id})
            await self.fail(job.id, job.format, f"{type(error).__name__}: {error}", holder=self.worker)

    async def fail(self, job_id: str, fmt: FileFormat, reason: str, *, holder: str | None) -> None:
        """Fail the job (if `holder` still holds it; None: whoever does) and delete its parts."""
        async with self.database.acquire() as connection:
            failed = await job_repository.fail(connection, job_id, holder, reason)
            parts = await job_repository.parts_written(connection, job_id)
        if failed:
            log.warning("file job failed", extra={"job_id": job_id, "reason": reason})
            await self.delete_parts(job_id, fmt, parts)

    async def delete_parts(self, job_id: str, fmt: FileFormat, done: int) -> None:
        """Delete a finished job's parts: the `done` ones, and one more that a stop may have left
        uncounted. Parts whose deletion is cut short are found and deleted by `sweep_parts`."""
        try:
            for index in range(done + 1):
                await self.artifacts.delete(part_key(job_id, index, fmt))
        except Exception:
            log.warning("deleting a file job's parts failed; retried later", extra={"job_id": job_id})
            return
        async with self.database.acquire() as connection:
            await job_repository.parts_cleared(connection, job_id)

    async def sweep_parts(self) -> None:
        """Delete the parts that finished jobs left behind."""
        async with self.database.acquire() as connection:
            leftovers = await job_repository.finished_with_parts(connection, SWEPT_JOBS)
        for job_id, fmt, done in leftovers:
            await self.delete_parts(job_id, fmt, done)

    async def recover_stale_jobs(self) -> None:
        """Queue again the running jobs whose replica went silent; fail those started too often."""
        gave_up: list[tuple[str, FileFormat, str]] = []
        requeued: list[str] = []
        async with self.database.acquire() as connection, connection.transaction():
            for job_id, attempts, fmt in await job_repository.stale_jobs(
                connection, self.settings.stale_job_seconds
            ):
                if attempts >= self.settings.max_job_attempts:
                    reason = (
                        f"the batch service running it stopped {attempts} time(s) before it finished; "
                        "giving up (FLYWHEEL_BATCH_MAX_JOB_ATTEMPTS allows more)"
                    )
                    gave_up.append((job_id, fmt, reason))
                else:
                    await job_repository.requeue(connection, job_id)
                    requeued.append(job_id)
        for job_id, fmt, reason in gave_up:
            await self.fail(job_id, fmt, reason, holder=None)
        if requeued:
            log.warning("file jobs of a silent replica queued again", extra={"jobs": requeued})
            self.wake()

    async def _recover_forever(self) -> None:
        while True:
            try:
                await self.recover_stale_jobs()
                await self.sweep_parts()
            except Exception:
                log.exception("recovering stale file jobs failed; retrying")
            await asyncio.sleep(self.settings.stale_job_seconds / 2)

    async def _beat(self, job_id: str) -> None:
        async with self.database.acquire() as connection:
            await job_repository.heartbeat(connection, job_id, self.worker)


class _JobRun:
    """One start of one job: from its last completed chunk to the output file."""

    def __init__(self, runner: FileJobRunner, job: ClaimedJob) -> None:
        self.runner = runner
        self.job = job
        self.artifacts = runner.artifacts
        self.chunks_done = job.chunks_done
        self.rows_scored = job.rows_scored
        self.rows_rejected = job.rows_rejected
        self.rejections = [(item.row, item.reason) for item in job.rejections]

    async def run(self) -> None:
        job = self.job
        version = await self.runner.models.resolve(ModelRef(job.model, version=job.model_version))
        with tempfile.TemporaryDirectory(prefix="flywheel-batch-") as directory:
            workdir = Path(directory)
            await self._stage("downloading input")
            path = workdir / f"input.{job.format}"
            await self._download(path)
            table = await asyncio.to_thread(open_table, path, job.format)
            try:
                rows = await self._score(table, version, workdir)
            finally:
                table.close()
            if self.rows_scored == 0 and self.rows_rejected > 0:
                first = "; ".join(f"row {row}: {reason}" for row, reason in self.rejections[:3])
                raise JobFailed(f"every one of the {self.rows_rejected} rows was rejected, e.g. {first}")
            await self._stage("writing output")
            output = await self._write_output(workdir)
        async with self.runner.database.acquire() as connection:
            done = await job_repository.succeed(
                connection,
                job.id,
                self.runner.worker,
                output_sha256=output.sha256 or "",
                output_bytes=output.size,
                rows_total=rows,
            )
        if not done:
            raise JobLost(job.id)
        log.info(
            "file job succeeded",
            extra={"job_id": job.id, "rows": rows, "rejected": self.rows_rejected, "output": job.output_uri},
        )
        await self.runner.delete_parts(job.id, job.format, self.chunks_done)

    async def _score(self, table: InputTable, version: ScoringVersion, workdir: Path) -> int:
        """Score every chunk from the last completed one, each part stored and kept in `workdir` too;
        the number of rows in the file."""
        job = self.job
        names, features = feature_columns(version.signature, table, job.features)
        datatypes = _input_datatypes(version, names)
        layout = OutputLayout(version.signature, table.columns)
        await self._stage("scoring")
        first_row = self.chunks_done * job.chunk_rows
        chunks = fixed_chunks(table.batches(first_row), job.chunk_rows, table.schema)

        def read_next() -> tuple[pa.Table, dict[str, np.ndarray]] | None:
            chunk = next(chunks, None)
            return None if chunk is None else (chunk, feature_arrays(chunk, datatypes))

        # The next chunk is read while this one is scored, written and stored: two cores at work.
        reading = asyncio.ensure_future(asyncio.to_thread(read_next))
        try:
            while (read := await reading) is not None:
                reading = asyncio.ensure_future(asyncio.to_thread(read_next))
                chunk, arrays = read
                started = time.perf_counter()
                scored = await self.runner.models.score_columns(version, arrays, features)
                seconds = time.perf_counter() - started
                part = await asyncio.to_thread(self._encode, layout, chunk, scored, version.version)
                index = self.chunks_done
                await self.artifacts.put_bytes(part_key(job.id, index, job.format), part)
                # A copy on disk spares the last step fetching it back from the store.
                await asyncio.to_thread(_local_part(workdir, index).write_bytes, part)
                logged = await self._report_sample(version, index, first_row, scored, seconds, chunk.num_rows)
                await self._record(index + 1, first_row, scored, logged, table)
                first_row += chunk.num_rows
        finally:
            # A read in flight finishes (one chunk) before the file is closed under it; its own failure,
            # if any, is already on its way up.
            with contextlib.suppress(BaseException):
                await reading
        return first_row

    def _encode(self, layout: OutputLayout, chunk: pa.Table, scored: ScoredRows, version: int) -> bytes:
        return encode_part(
            layout.table(chunk, scored, version), self.job.format, header=self.chunks_done == 0
        )

    async def _record(
        self, chunks_done: int, first_row: int, scored: ScoredRows, logged: int, table: InputTable
    ) -> None:
        room = max(KEPT_REJECTIONS - len(self.rejections), 0)
        kept = [(first_row + row, reason) for row, reason in sorted(scored.rejected.items())[:room]]
        async with self.runner.database.acquire() as connection:
            recorded = await job_repository.record_chunk(
                connection,
                self.job.id,
                self.runner.worker,
                chunks_done=chunks_done,
                scored=len(scored.scored),
                rejected=len(scored.rejected),
                logged=logged,
                rejections=[{"row": row, "reason": reason} for row, reason in kept],
                progress=min(table.fraction_read(), 0.99),
                rows_total=table.total_rows,
            )
        if not recorded:
            raise JobLost(self.job.id)
        self.chunks_done = chunks_done
        self.rows_scored += len(scored.scored)
        self.rows_rejected += len(scored.rejected)
        self.rejections += kept

    async def _report_sample(
        self,
        version: ScoringVersion,
        chunk_index: int,
        first_row: int,
        scored: ScoredRows,
        seconds: float,
        rows: int,
    ) -> int:
        """Report a sample of the chunk's scored rows to prediction-logged, each as request `<job id>:<row>`;
        best effort (a failed publish is logged, never fails the job). How many rows were reported."""
        rate = self.runner.settings.prediction_log_sample_rate
        picked = sample_rows(job_seed(self.job.id), chunk_index, len(scored.scored), rate)
        if not len(picked):
            return 0
        positions = np.asarray(scored.scored, dtype=np.int64)[picked]
        latency_ms = seconds * 1000 / max(rows, 1)
        now = datetime.now(UTC)
        logged = 0
        requests = [
            logged_request(self.job.id, 1, latency_ms, now, first_row=first_row + int(row))
            for row in positions
        ]

        def event(part: slice) -> bytes:
            return prediction_logged_json(
                model=version.name,
                version=version.version,
                requests=requests[part],
                inputs={name: array[picked[part]] for name, array in scored.inputs.items()},
                outputs={name: array[picked[part]] for name, array in scored.outputs.items()},
                source=EVENT_SOURCE,
                alias=self.job.alias,
            )

        for start in range(0, len(picked), LOGGED_ROWS_PER_EVENT):
            chunk = slice(start, min(start + LOGGED_ROWS_PER_EVENT, len(picked)))
            try:
                for part, value in events_that_fit(event, chunk):
                    async with asyncio.timeout(PUBLISH_TIMEOUT_SECONDS):
                        await self.runner.bus.publish_raw(
                            Topic.PREDICTION_LOGGED, value, key=version.name.encode()
                        )
                    logged += part.stop - part.start
            except Exception as error:
                log.warning(
                    "reporting scored rows to prediction-logged failed",
                    extra={"job_id": self.job.id, "error": repr(error)},
                )
                break
        return logged

    async def _stage(self, stage: str) -> None:
        async with self.runner.database.acquire() as connection:
            if not await job_repository.set_stage(connection, self.job.id, self.runner.worker, stage):
                raise JobLost(self.job.id)

    async def _download(self, path: Path) -> None:
        uri = self.job.input_uri
        try:
            key = self.artifacts.key_from_uri(uri)
            with path.open("wb") as file:
                async for chunk in self.artifacts.stream(key):
                    file.write(chunk)
        except (ArtifactNotFound, InvalidArtifactKey) as error:
            raise JobFailed(f"the input {uri} cannot be read: {error}") from error

    async def _write_output(self, workdir: Path) -> ObjectInfo:
        """Join the parts into the output file, stored whole or not at all."""
        job = self.job
        output_key = self.artifacts.key_from_uri(job.output_uri)
        if job.format == "csv":
            return await self.artifacts.put_stream(
                output_key, self._joined_parts(workdir), CONTENT_TYPES["csv"]
            )
        assembly = ParquetAssembly(workdir / "output.parquet")
        try:
            for index in range(self.chunks_done):
                part = b"".join([chunk async for chunk in self._part(index, workdir)])
                await asyncio.to_thread(assembly.append, part)
        finally:
            await asyncio.to_thread(assembly.close)
        return await self.artifacts.put_stream(
            output_key, _file_chunks(assembly.path), CONTENT_TYPES["parquet"]
        )

    async def _joined_parts(self, workdir: Path) -> AsyncIterator[bytes]:
        for index in range(self.chunks_done):
            async for chunk in self._part(index, workdir):
                yield chunk

    def _part(self, index: int, workdir: Path) -> AsyncIterator[bytes]:
        """A part's bytes: from this run's copy on disk, else (done before a restart) from the store."""
        local = _local_part(workdir, index)
        if local.exists():
            return _file_chunks(local)
        return self.artifacts.stream(part_key(self.job.id, index, self.job.format))


def _local_part(workdir: Path, index: int) -> Path:
    return workdir / f"part-{index:06d}"


def _input_datatypes(version: ScoringVersion, names: list[str]) -> dict[str, str]:
    """Each feature column's datatype: its input's, or the single input's for every column."""
    inputs = version.signature.inputs
    if takes_feature_inputs(version.signature):
        return {spec.name: spec.datatype for spec in inputs}
    return dict.fromkeys(names, inputs[0].datatype)


async def _file_chunks(path: Path, size: int = 1024 * 1024) -> AsyncIterator[bytes]:
    with path.open("rb") as file:
        while chunk := await asyncio.to_thread(file.read, size):
            yield chunk


@contextlib.asynccontextmanager
async def run_file_jobs(
    app: FastAPI, runtime: Runtime, settings: BatchSettings, models: ScoringModels
) -> AsyncIterator[None]:
    """File jobs in the service's lifespan: the service behind the routes and the runner."""
    if runtime.database is None:
        raise RuntimeError("file jobs need the batch service's database")
    app.state.file_job_runner = runner = FileJobRunner(
        runtime.database, runtime.artifacts, runtime.bus, models, settings
    )
    app.state.file_jobs = FileJobService(
        runtime.database,
        runtime.artifacts,
        models.describe_version,
        chunk_rows=settings.chunk_rows,
        on_submitted=runner.wake,
    )
    app.state.max_upload_bytes = settings.max_upload_bytes
    await runner.start()
    try:
        yield
    finally:
        await runner.stop()
