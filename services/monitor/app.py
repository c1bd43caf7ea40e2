"""The monitor service's HTTP app: its lifespan opens the bus, the artifact store and the database, then
the drift monitor with its consumer of predictions and the outbox publisher of its alerts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

import services.monitor
from services.monitor import sign_in, subscription_endpoints
from services.monitor.alerting import start_alerting
from services.monitor.dashboard import router as dashboard_router
from services.monitor.drift_monitor import DriftMonitor
from services.monitor.endpoints import add_error_handlers, router
from services.monitor.references import References
from services.monitor.settings import MonitorSettings
from services.monitor.worker import MonitorWorker
from services.monitor.workspaces import check_model_workspace, model_workspaces
from shared.auth import Permission, guarded, service_token
from shared.bus import EventBus
from shared.model_versions import RegistryClient
from shared.outbox import OutboxPublisher
from shared.service import Runtime, create_service_app, garbage_collector_for_throughput
from shared.settings import FlywheelSettings

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(
    settings: FlywheelSettings | None = None,
    monitor_settings: MonitorSettings | None = None,
    *,
    bus: EventBus | None = None,
) -> FastAPI:
    """`bus`: an event bus this process shares between services (the embedded mode), else its own."""
    monitor_settings = monitor_settings or MonitorSettings()

    @asynccontextmanager
    async def monitor_lifespan(app: FastAPI, runtime: Runtime) -> AsyncIterator[None]:
        assert runtime.database is not None
        registry = RegistryClient(monitor_settings.registry_url, token=service_token(runtime.settings))
        app.state.registry = registry  # whose each model is (services.monitor.workspaces)
        outbox = OutboxPublisher(runtime.database, runtime.bus, name="monitor")
        references = References(registry.describe_version, runtime.artifacts)
        app.state.monitor = monitor = DriftMonitor(runtime.database, references, outbox.notify)
        outbox.start()
        try:
            with garbage_collector_for_throughput():  # halves the cost of an event (bench/drift)
                async with (
                    MonitorWorker(monitor, monitor_settings.window_check_seconds).running(runtime.bus),
                    start_alerting(app, runtime, monitor_settings, model_workspaces(app, registry)),
                ):
                    yield
        finally:
            await outbox.stop()
            await registry.close()

    app = create_service_app(
        "monitor",
        description=services.monitor.__doc__ or "",
        settings=settings or FlywheelSettings(),
        migrations=MIGRATIONS,
        routers=[
            guarded(router, Permission.MONITOR, then=[check_model_workspace]),
            guarded(subscription_endpoints.router, Permission.MONITOR),
            guarded(dashboard_router, Permission.MONITOR, then=[check_model_workspace]),
            sign_in.router,  # open: it is where a browser gets its token checked
        ],
        service_lifespan=monitor_lifespan,
        bus=bus,
        registry_url=monitor_settings.registry_url,
    )
    add_error_handlers(app)
    sign_in.send_browsers_to_sign_in(app)
    return app
