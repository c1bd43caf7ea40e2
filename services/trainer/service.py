"""Training jobs: submission, datasets, retrain requests (coalesced), and crash recovery."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterable, Callable

import asyncpg

from services.trainer import repository
from services.trainer.registry_client import RegistryClient
from services.trainer.schemas import Dataset, Job, JobPage, JobRequest, RetrainRequest
from shared.artifacts import ArtifactStore, InvalidArtifactKey
from shared.artifacts.workspaces import visible_to, workspace_key
from shared.auth import DEFAULT_WORKSPACE
from shared.events import CloudEvent, Topic, TrainingJobQueued
from shared.outbox import enqueue_event
from shared.pagination import decode_page_token, next_page_token

log = logging.getLogger(__name__)

EVENT_SOURCE = "/flywheel/trainer"
JOB_REQUEST_TAG = "flywheel.job_request"  # on every run the trainer makes: how to train it again
DATASET_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")


class JobNotFound(LookupError):
    pass


class CannotRetrain(ValueError):
    """The model has no production version made by the trainer, so there is no configuration to reuse."""


class InvalidDataset(ValueError):
    pass


class DatasetNotFound(LookupError):
    """No dataset at that URI that the caller's workspace may use (another workspace's reads as missing)."""


def check_dataset_uri(artifacts: ArtifactStore, uri: str, scope: str | None) -> None:
    """Refuse, before a job is queued (not when it is run), a dataset URI outside this platform's store
    (another bucket, a `..` segment, a local path: InvalidDataset) or outside the caller's workspace
    `scope` (None: every workspace; DatasetNotFound)."""
    try:
        key = artifacts.key_from_uri(uri)
    except InvalidArtifactKey as error:
        raise InvalidDataset(f"dataset_uri: {error}") from error
    if not visible_to(key, scope):
        raise DatasetNotFound(f"no dataset at {uri}")


class TrainerService:
    def __init__(
        self,
        database: asyncpg.Pool,
        artifacts: ArtifactStore,
        registry: RegistryClient,
        on_events: Callable[[], None],
    ) -> None:
        self.database = database
        self.artifacts = artifacts
        self.registry = registry
        self.on_events = on_events  # wakes the outbox publisher after a commit with events

    async def submit_job(
        self,
        request: JobRequest,
        reason: str = "manual",
        workspace: str = DEFAULT_WORKSPACE,
        caller_scope: str | None = None,
    ) -> Job:
        """Queue a job of `workspace` (its run and model are made there); a trainer replica (any) picks it
        up from the training-jobs topic. Its dataset must be the caller's workspace's (`caller_scope`;
        None: any workspace's)."""
        check_dataset_uri(self.artifacts, request.dataset_uri, caller_scope)
        job_id = uuid.uuid4().hex
        async with self.database.acquire() as connection, connection.transaction():
            job = await repository.insert_job(
                connection, job_id, request.model_name, reason, request.model_dump(mode="json"), workspace
            )
            queued = TrainingJobQueued(job_id=job_id, model_name=request.model_name)
            await enqueue_event(
                connection,
                Topic.TRAINING_JOBS,
                CloudEvent.wrap(queued, source=EVENT_SOURCE, subject=job_id),
                key=request.model_name,
            )
        self.on_events()
        return job

    async def get_job(self, job_id: str, workspace: str | None = None) -> Job:
        """The job, if it is `workspace`'s (None: any workspace's)."""
        async with self.database.acquire() as connection:
            job = await repository.get_job(connection, job_id, workspace)
        if job is None:
            raise JobNotFound(f"no training job {job_id!r}")
        return job

    async def list_jobs(
        self, model_name: str | None, page_size: int, page_token: str | None, workspace: str | None = None
    ) -> JobPage:
        offset = decode_page_token(page_token)
        async with self.database.acquire() as connection:
            jobs = await repository.list_jobs(connection, model_name, page_size + 1, offset, workspace)
        return JobPage(jobs=jobs[:page_size], next_page_token=next_page_token(offset, page_size, len(jobs)))

    async def upload_dataset(
        self, filename: str, content: AsyncIterable[bytes], workspace: str = DEFAULT_WORKSPACE
    ) -> Dataset:
        """Store a CSV or Parquet file under the workspace's datasets/ and return its URI and fingerprint."""
        if not filename.lower().endswith(DATASET_SUFFIXES):
            raise InvalidDataset(f"dataset {filename!r} must end in one of {', '.join(DATASET_SUFFIXES)}")
        try:
            key = workspace_key(workspace, f"datasets/{uuid.uuid4().hex}/{filename}")
        except InvalidArtifactKey as error:
            raise InvalidDataset(f"dataset name {filename!r} is not a plain file name") from error
        stored = await self.artifacts.put_stream(key, content, "application/octet-stream")
        assert stored.sha256 is not None
        return Dataset(uri=stored.uri, sha256=stored.sha256, size=stored.size)

    async def request_retrain(self, request: RetrainRequest, workspace: str | None = None) -> Job:
        """Retrain with the configuration of the run behind the production version (and newer data when
        given), in the model's workspace; a caller of another `workspace` (None: any) sees no such model,
        and its dataset must be the caller's workspace's. A request for a model that already has a job
        queued or running joins that job."""
        async with self.database.acquire() as connection:
            active = await repository.active_job_for_model(connection, request.model)
        if active is not None and workspace in (None, active.workspace):
            log.info("retrain coalesced", extra={"model": request.model, "job_id": active.id})
            return active
        production = await self.registry.version_by_alias(request.model, "production")
        if production is not None and workspace not in (None, production.get("workspace", DEFAULT_WORKSPACE)):
            production = None  # another workspace's model reads as missing
        if production is None or production.get("source_run_id") is None:
            raise CannotRetrain(
                f"model {request.model!r} has no production version trained by a run to start from"
            )
        run = await self.registry.get_run(production["source_run_id"])
        if run is None or JOB_REQUEST_TAG not in run["tags"]:
            raise CannotRetrain(
                f"the run behind {request.model} v{production['version']} was not made by the trainer; "
                "submit a job instead"
            )
        previous = JobRequest.model_validate(json.loads(run["tags"][JOB_REQUEST_TAG]))
        retrain = previous.model_copy(update={"dataset_uri": request.dataset_uri or previous.dataset_uri})
        return await self.submit_job(
            JobRequest.model_validate(retrain.model_dump()),
            reason=request.reason,
            workspace=production.get("workspace", DEFAULT_WORKSPACE),
            caller_scope=workspace,
        )

    async def requeue_stale_jobs(self, silent_seconds: float, max_attempts: int) -> list[Job]:
        """Queue again the jobs whose replica died mid-run (no heartbeat for `silent_seconds`); return those
        that have been started `max_attempts` times already, for the caller to fail."""
        exhausted: list[Job] = []
        requeued: list[str] = []
        async with self.database.acquire() as connection, connection.transaction():
            for job_id, model_name, attempts in await repository.stale_jobs(connection, silent_seconds):
                if attempts >= max_attempts:
                    job = await repository.get_job(connection, job_id)
                    assert job is not None
                    exhausted.append(job)
                    continue
                await repository.requeue(connection, job_id)
                queued = TrainingJobQueued(job_id=job_id, model_name=model_name)
                await enqueue_event(
                    connection,
                    Topic.TRAINING_JOBS,
                    CloudEvent.wrap(queued, source=EVENT_SOURCE, subject=job_id),
                    key=model_name,
                )
                requeued.append(job_id)
        if requeued:
            self.on_events()
            log.warning("stale jobs queued again", extra={"jobs": requeued})
        return exhausted
