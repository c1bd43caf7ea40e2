"""The batch service's HTTP app: its lifespan opens the bus, the artifact store and the database, then
the scoring models, the Kafka-fed scoring stream, the consumer of alias moves, and the file jobs' runner."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

import services.batch
from services.batch.endpoints import add_error_handlers, router
from services.batch.job_runner import run_file_jobs
from services.batch.scoring import ScoringModels
from services.batch.settings import BatchSettings
from services.batch.stream import ScoringStream
from services.batch.worker import BatchWorker
from shared.auth import Permission, guarded, service_token
from shared.bus import EventBus, KafkaBus
from shared.model_versions import RegistryClient, default_intra_op_threads
from shared.service import Runtime, create_service_app, garbage_collector_for_throughput
from shared.settings import FlywheelSettings
from shared.workers import claim_worker_slot

MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger(__name__)


# EX_SOFTWARE: the process ended itself on an internal error.
STREAM_FAILED_EXIT_CODE = 70


def exit_to_be_replaced(error: BaseException) -> None:
    """End this worker process at once, so that uvicorn (or the orchestrator) starts another: a stream
    that stopped would leave the worker up and its partitions unscored. Nothing is lost: an open
    transaction is aborted (the replacement fences it) and its records are consumed again, and file jobs
    are resumed by the next worker (see `job_runner`)."""
    logging.shutdown()  # flush the log line that said why
    os._exit(STREAM_FAILED_EXIT_CODE)


def create_app(
    settings: FlywheelSettings | None = None,
    batch_settings: BatchSettings | None = None,
    *,
    bus: EventBus | None = None,
) -> FastAPI:
    """`bus`: an event bus this process shares between services (the embedded mode), else its own."""
    batch = batch_settings or BatchSettings()

    @asynccontextmanager
    async def batch_lifespan(app: FastAPI, runtime: Runtime) -> AsyncIterator[None]:
        registry = RegistryClient(batch.registry_url, token=service_token(runtime.settings))
        executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="score")  # scoring runs off the loop
        models = ScoringModels(
            registry.describe_version,
            runtime.artifacts,
            intra_op_threads=batch.intra_op_threads or default_intra_op_threads(batch.workers),
            max_loaded=batch.max_loaded_models,
            executor=executor,
        )
        app.state.models = models
        await BatchWorker(models).subscribe(runtime.bus)
        stream = None
        slot = claim_worker_slot()  # the stream's transactional id passes to this worker's replacement
        if isinstance(runtime.bus, KafkaBus):
            stream = ScoringStream(
                runtime.bus, models, batch, worker=slot.number, on_failure=exit_to_be_replaced
            )
            await stream.start()
        else:
            log.warning("no Kafka: scoring requests are not consumed (file jobs still run)")
        try:
            with garbage_collector_for_throughput():
                async with run_file_jobs(app, runtime, batch, models):
                    yield
        finally:
            if stream is not None:
                await stream.stop()
            executor.shutdown(wait=True)
            await registry.close()
            slot.release()

    app = create_service_app(
        "batch",
        description=services.batch.__doc__ or "",
        settings=settings or FlywheelSettings(),
        migrations=MIGRATIONS,
        routers=[guarded(router, Permission.BATCH)],
        service_lifespan=batch_lifespan,
        bus=bus,
        registry_url=batch.registry_url,
        upload_limits={"/jobs/upload": batch.max_upload_bytes},  # streamed to storage
    )
    add_error_handlers(app)
    return app
