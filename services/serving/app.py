"""The serving service's HTTP app: its lifespan opens the bus and the artifact store, then the model store,
the prediction log and the consumer of alias moves."""

import os
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from typing import Any

from fastapi import FastAPI

import services.serving
from services.serving.endpoints import add_error_handlers, document_hot_routes, router
from services.serving.hot_routes import HotInferenceRoutes, InferenceRoutes
from services.serving.models import ModelStore
from services.serving.prediction_log import PredictionLog
from services.serving.service import InferenceService
from services.serving.settings import ServingSettings
from services.serving.traffic import TrafficPolicies
from services.serving.worker import ServingWorker
from shared.auth import service_token
from shared.bus import EventBus
from shared.hot_routes import HotRoutesApp
from shared.http_protocol import FAST_ROUTES
from shared.model_versions import RegistryClient, default_intra_op_threads
from shared.service import Runtime, create_service_app, garbage_collector_for_throughput
from shared.settings import FlywheelSettings


def schedule_as_batch_work() -> None:
    """Mark the calling thread (an inference thread, as it starts) as CPU-bound batch work for Linux's
    scheduler (SCHED_BATCH; onnxruntime's own threads, started from it, inherit that): a thread so marked
    never preempts another on waking, so an event loop woken by a request runs at once instead of waiting
    for the inference thread's time slice. With two workers on two cores the loops are what holds 1-row
    requests back: 18 pairs of quick runs in turns gave 1-row answers at c=64 about 8% more a second
    (more in 13 of 18) and the same 100-row rate (see bench/README.md). Elsewhere, a no-op."""
    if hasattr(os, "SCHED_BATCH"):
        with suppress(OSError):  # a sandbox may refuse it: the default policy still works
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))


def create_app(
    settings: FlywheelSettings | None = None,
    serving_settings: ServingSettings | None = None,
    *,
    bus: EventBus | None = None,
) -> FastAPI:
    """`bus`: an event bus this process shares between services (the embedded mode), else its own."""
    serving = serving_settings or ServingSettings()

    @asynccontextmanager
    async def serving_lifespan(app: FastAPI, runtime: Runtime) -> AsyncIterator[Mapping[str, Any] | None]:
        registry = RegistryClient(serving.registry_url, token=service_token(runtime.settings))
        # onnxruntime releases the GIL: inference threads run beside the event loop, never on it.
        executor = ThreadPoolExecutor(
            max_workers=serving.max_concurrent_batches * 2,
            thread_name_prefix="infer",
            initializer=schedule_as_batch_work,
        )
        models = ModelStore(
            registry.describe_version,
            runtime.artifacts,
            max_loaded=serving.max_loaded_models,
            intra_op_threads=serving.intra_op_threads or default_intra_op_threads(serving.workers),
            batcher_settings={
                "max_batch_size": serving.max_batch_size,
                "max_wait_seconds": serving.max_batch_wait_ms / 1000,
                "max_concurrent_batches": serving.max_concurrent_batches,
            },
            executor=executor,
        )
        predictions = PredictionLog(
            runtime.bus,
            capacity=serving.prediction_log_capacity,
            batch_size=serving.prediction_log_batch_size,
        )
        await predictions.start()
        traffic = TrafficPolicies(registry.traffic_policy, serving.default_alias)
        inference = InferenceService(
            models, predictions, traffic, max_shadows_in_flight=serving.max_shadows_in_flight
        )
        routes = InferenceRoutes(inference, app.state.authenticator, max_body_bytes=serving.max_request_bytes)
        app.state.models = models
        app.state.inference = inference
        app.state.inference_routes = routes
        await ServingWorker(models, traffic).subscribe(runtime.bus)
        try:
            with garbage_collector_for_throughput():
                # Under uvicorn with ServiceHttpProtocol, the inference routes are then answered by the
                # protocol itself (its fast lane); under any other server, by HotInferenceRoutes.
                yield {FAST_ROUTES: routes} if serving.fast_lane else None
        finally:
            await inference.drain_shadows()
            await models.close()
            await predictions.stop()
            executor.shutdown(wait=True)
            await registry.close()

    app = create_service_app(
        "serving",
        description=services.serving.__doc__ or "",
        settings=settings or FlywheelSettings(),
        routers=[router],  # its routes check INFER themselves, and the hot routes in HotInferenceRoutes
        service_lifespan=serving_lifespan,
        bus=bus,
        registry_url=serving.registry_url,
        app_class=HotRoutesApp,
    )
    assert isinstance(app, HotRoutesApp)
    app.answer_first(HotInferenceRoutes)  # the inference routes, before FastAPI's per-request machinery
    app.state.default_alias = serving.default_alias
    add_error_handlers(app)
    document_hot_routes(app)
    return app
