"""The trainer's Kafka consumers: queued jobs, retrain requests, and registrations of its own runs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import uuid

import asyncpg

from services.trainer import repository
from services.trainer.registry_client import RegistryClient
from services.trainer.runner import JobRunner
from services.trainer.schemas import Job, RetrainRequest
from services.trainer.service import CannotRetrain, DatasetNotFound, InvalidDataset, TrainerService
from shared.bus import EventBus
from shared.events import (
    CloudEvent,
    InvalidEvent,
    ModelRegistered,
    RetrainRequested,
    Topic,
    TrainingJobQueued,
)

log = logging.getLogger(__name__)

# One consumer group per topic, so that a rebalance on one (a replica joining) does not pause the others.
JOBS_GROUP = "trainer-jobs"
RETRAIN_GROUP = "trainer-retrain"
REGISTRATIONS_GROUP = "trainer-registrations"


class TrainerWorker:
    def __init__(
        self,
        database: asyncpg.Pool,
        service: TrainerService,
        runner: JobRunner,
        registry: RegistryClient,
        *,
        max_concurrent_jobs: int,
        stale_job_seconds: float,
        max_job_attempts: int,
    ) -> None:
        self.database = database
        self.service = service
        self.runner = runner
        self.registry = registry
        self.replica = f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
        self.slots = asyncio.Semaphore(max_concurrent_jobs)
        self.stale_job_seconds = stale_job_seconds
        self.max_job_attempts = max_job_attempts
        self.running: set[asyncio.Task[None]] = set()
        self._recovery: asyncio.Task[None] | None = None

    async def start(self, bus: EventBus) -> None:
        await bus.subscribe(Topic.TRAINING_JOBS, JOBS_GROUP, self.handle_training_job)
        await bus.subscribe(Topic.RETRAIN_REQUESTED, RETRAIN_GROUP, self.handle_retrain_requested)
        await bus.subscribe(Topic.MODEL_REGISTERED, REGISTRATIONS_GROUP, self.handle_model_registered)
        self._recovery = asyncio.create_task(self._recover_forever(), name="trainer-recovery")

    async def stop(self) -> None:
        """Stop taking work; jobs in flight are cancelled and, once silent, recovered by another replica."""
        for task in [*self.running, *([self._recovery] if self._recovery else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def handle_training_job(self, event: CloudEvent) -> None:
        """Claim the job (one replica wins) and train it in the background; waits while all slots are busy,
        which holds back consumption rather than piling jobs up in memory."""
        queued = event.payload_as(TrainingJobQueued)
        await self.slots.acquire()
        async with self.database.acquire() as connection:
            job = await repository.claim_job(connection, queued.job_id, self.replica)
        if job is None:  # done already, or another replica has it
            self.slots.release()
            return
        task = asyncio.create_task(self._run(job), name=f"job:{job.id}")
        self.running.add(task)
        task.add_done_callback(self.running.discard)

    async def _run(self, job: Job) -> None:
        try:
            await self.runner.run(job)
        finally:
            self.slots.release()

    async def handle_retrain_requested(self, event: CloudEvent) -> None:
        requested = event.payload_as(RetrainRequested)
        try:
            job = await self.service.request_retrain(
                RetrainRequest(
                    model=requested.model, reason=requested.reason, dataset_uri=requested.dataset_uri
                )
            )
        except (CannotRetrain, InvalidDataset, DatasetNotFound) as error:
            raise InvalidEvent(str(error)) from error
        log.info(
            "retrain requested",
            extra={"model": requested.model, "job_id": job.id, "reason": requested.reason},
        )

    async def handle_model_registered(self, event: CloudEvent) -> None:
        """When a version made by one of this trainer's jobs is registered, apply the job's gate decision:
        record it on the version (tags, which the registry's audit trail keeps) and move the alias if won."""
        registered = event.payload_as(ModelRegistered)
        if registered.source_run_id is None:
            return
        async with self.database.acquire() as connection:
            job = await repository.job_of_run(connection, registered.source_run_id)
        gate = (job.result or {}).get("gate") if job else None
        if not gate:
            return
        await self.registry.tag_version(
            registered.name,
            registered.version,
            {
                "gate.decision": "promoted" if gate["promoted"] else "rejected",
                "gate.metric": gate["metric"],
                "gate.challenger": str(gate["challenger"]),
                "gate.champion": "none" if gate["champion"] is None else str(gate["champion"]),
                "gate.reason": gate["reason"],
                "gate.detail": json.dumps(gate),
            },
        )
        if gate["promoted"]:
            await self.registry.set_alias(registered.name, gate["promote_to"], registered.version)
            log.info(
                "challenger promoted",
                extra={"model": registered.name, "version": registered.version, "alias": gate["promote_to"]},
            )

    async def recover_stale_jobs(self) -> None:
        """Never a job 'running' forever: a silent one is queued again, or failed after its last attempt."""
        for job in await self.service.requeue_stale_jobs(self.stale_job_seconds, self.max_job_attempts):
            await self.runner.fail(
                job,
                job.run_id,
                f"the trainer running it stopped answering {job.attempts} time(s); giving up",
                [],
            )

    async def _recover_forever(self) -> None:
        while True:
            await asyncio.sleep(self.stale_job_seconds / 2)
            try:
                await self.recover_stale_jobs()
            except Exception:
                log.exception("recovering stale jobs failed; retrying")
