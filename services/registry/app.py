"""The registry service's HTTP app: its lifespan opens the bus, the artifact store and the database, then
starts the outbox publisher and the run-completed consumer."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

from fastapi import FastAPI

import services.registry
from services.registry.endpoints import add_error_handlers, registry_router, tracking_router
from services.registry.hot_routes import HotRunRoutes
from services.registry.model_registry import ModelRegistry
from services.registry.settings import RegistrySettings
from services.registry.token_endpoints import auth_router
from services.registry.tokens import TokenService
from services.registry.tracking import TrackingService
from services.registry.worker import RegistryWorker
from shared.auth import Authenticator, TokenVerifier
from shared.bus import EventBus
from shared.hot_routes import HotRoutesApp
from shared.outbox import OutboxPublisher
from shared.service import Runtime, create_service_app
from shared.settings import FlywheelSettings

MIGRATIONS = Path(__file__).parent / "migrations"


@asynccontextmanager
async def registry_lifespan(app: FastAPI, runtime: Runtime) -> AsyncIterator[None]:
    assert runtime.database is not None
    outbox = OutboxPublisher(runtime.database, runtime.bus, name="registry")
    app.state.tracking = tracking = TrackingService(runtime.database, runtime.artifacts)
    app.state.registry = registry = ModelRegistry(
        runtime.database, runtime.artifacts, on_events=outbox.notify
    )
    app.state.tokens = tokens = TokenService(runtime.database)
    await tokens.take_configured_tokens(runtime.settings)
    if runtime.settings.auth_enabled:  # the registry answers for tokens itself, from its table
        verifier = TokenVerifier(tokens.principal_of, runtime.settings.auth_cache_seconds)
        app.state.authenticator = Authenticator(verifier)
    outbox.start()
    await RegistryWorker(tracking, registry).subscribe(runtime.bus)
    try:
        yield
    finally:
        await outbox.stop()


def create_app(
    settings: FlywheelSettings | None = None,
    registry_settings: RegistrySettings | None = None,
    *,
    bus: EventBus | None = None,
) -> FastAPI:
    """`bus`: an event bus this process shares between services (the embedded mode), else its own."""
    settings = settings or FlywheelSettings()
    max_upload_bytes = (registry_settings or RegistrySettings()).max_upload_bytes
    app = create_service_app(
        "registry",
        description=services.registry.__doc__ or "",
        settings=settings,
        migrations=MIGRATIONS,
        routers=[tracking_router, registry_router, auth_router],
        service_lifespan=registry_lifespan,
        bus=bus,
        # ONNX models and run artifacts are streamed to storage, up to the upload limit.
        upload_limits={
            "/models/{name}/versions": max_upload_bytes,
            "/runs/{run_id}/artifacts/{path:path}": max_upload_bytes,
        },
        app_class=HotRoutesApp,
    )
    assert isinstance(app, HotRoutesApp)
    app.answer_first(partial(HotRunRoutes, max_body_bytes=settings.max_body_bytes))
    app.state.max_upload_bytes = max_upload_bytes
    add_error_handlers(app)
    return app
