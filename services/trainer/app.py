"""The trainer service's HTTP app: its lifespan opens the bus, the artifact store and the database, then
starts the outbox publisher and the consumers of training jobs, retrain requests and registrations."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

import services.trainer
from services.trainer.endpoints import add_error_handlers, router
from services.trainer.registry_client import RegistryClient
from services.trainer.runner import JobRunner
from services.trainer.schedules import RetrainScheduler
from services.trainer.service import TrainerService
from services.trainer.settings import TrainerSettings
from services.trainer.worker import TrainerWorker
from shared.auth import Permission, guarded, service_token
from shared.bus import EventBus
from shared.outbox import OutboxPublisher
from shared.service import Runtime, create_service_app
from shared.settings import FlywheelSettings

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(
    settings: FlywheelSettings | None = None,
    trainer_settings: TrainerSettings | None = None,
    *,
    bus: EventBus | None = None,
) -> FastAPI:
    """`bus`: an event bus this process shares between services (the embedded mode), else its own."""
    trainer_settings = trainer_settings or TrainerSettings()

    @asynccontextmanager
    async def trainer_lifespan(app: FastAPI, runtime: Runtime) -> AsyncIterator[None]:
        assert runtime.database is not None
        outbox = OutboxPublisher(runtime.database, runtime.bus, name="trainer")
        registry = RegistryClient(trainer_settings.registry_url, token=service_token(runtime.settings))
        app.state.trainer = service = TrainerService(
            runtime.database, runtime.artifacts, registry, outbox.notify
        )
        runner = JobRunner(
            runtime.database,
            runtime.artifacts,
            registry,
            outbox.notify,
            heartbeat_seconds=trainer_settings.heartbeat_seconds,
        )
        worker = TrainerWorker(
            runtime.database,
            service,
            runner,
            registry,
            max_concurrent_jobs=trainer_settings.max_concurrent_jobs,
            stale_job_seconds=trainer_settings.stale_job_seconds,
            max_job_attempts=trainer_settings.max_job_attempts,
        )
        app.state.schedules = schedules = RetrainScheduler(
            runtime.database, outbox.notify, registry, runtime.artifacts
        )
        outbox.start()
        await worker.start(runtime.bus)
        firing = asyncio.create_task(schedules.run_forever(trainer_settings.schedule_poll_seconds))
        try:
            yield
        finally:
            firing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await firing
            await worker.stop()
            await outbox.stop()
            await registry.close()

    app = create_service_app(
        "trainer",
        description=services.trainer.__doc__ or "",
        settings=settings or FlywheelSettings(),
        migrations=MIGRATIONS,
        routers=[guarded(router, Permission.TRAIN)],  # retraining routes need RETRAIN too
        service_lifespan=trainer_lifespan,
        bus=bus,
        registry_url=trainer_settings.registry_url,
        upload_limits={"/datasets": trainer_settings.max_dataset_bytes},  # streamed to storage
    )
    app.state.max_dataset_bytes = trainer_settings.max_dataset_bytes
    add_error_handlers(app)
    return app
