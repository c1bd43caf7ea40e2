"""What every service process has: its runtime (bus, artifact store, database), health and metrics routes.

A service's `app.py` calls `create_service_app` with its name, migrations and routers; its
`__main__.py` calls `run_service`. Endpoints reach the runtime through the `get_runtime` dependency.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import asyncpg
import httpx
import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from pydantic_settings import BaseSettings

from shared.artifacts import ArtifactStore, create_artifact_store
from shared.auth import Authenticator, Permission, Principal, TokenVerifier, registry_lookup, require
from shared.bus import EventBus, create_bus
from shared.db import create_pool
from shared.heartbeat import heartbeat
from shared.http_protocol import ServiceHttpProtocol, this_workers_connection_counts
from shared.migrations import migrate
from shared.request_limits import RequestSizeLimit
from shared.settings import FlywheelSettings
from shared.telemetry import (
    PENDING_FLUSH_SECONDS,
    PrometheusMiddleware,
    flush_pending_metrics,
    hide_secrets,
    logging_config,
    metrics_exposition,
    redact,
)
from shared.workers import (
    CONNECTION_COUNTS_FILE,
    WORKER_SLOTS_VARIABLE,
    ConnectionCounts,
    remove_orphaned_worker_directories,
)

READINESS_CHECK_TIMEOUT_SECONDS = 2.0


class ServiceSettings(BaseSettings):
    """Where one service listens. Subclasses set `env_prefix` (FLYWHEEL_<SERVICE>_) and the port."""

    host: str = "127.0.0.1"
    port: int

    @property
    def url(self) -> str:
        """Where a client on this machine reaches the service (a wildcard address is reached on loopback)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"


@dataclass
class Runtime:
    """The connections a running service holds, opened and closed by its app's lifespan."""

    service: str
    settings: FlywheelSettings
    bus: EventBus
    artifacts: ArtifactStore
    database: asyncpg.Pool | None

    async def readiness(self) -> dict[str, bool]:
        """Whether each dependency answers now."""
        checks: dict[str, Callable[[], Awaitable[bool]]] = {
            "bus": self.bus.ready,
            "artifacts": self.artifacts.ready,
        }
        if self.database is not None:
            database = self.database
            checks["database"] = lambda: _database_answers(database)
        results = await asyncio.gather(*(_within_timeout(check) for check in checks.values()))
        return dict(zip(checks, results, strict=True))


@asynccontextmanager
async def open_runtime(
    service: str, settings: FlywheelSettings, *, migrations: Path | None, bus: EventBus | None = None
) -> AsyncIterator[Runtime]:
    """Connect to the platform's servers; a service with `migrations` gets its database schema migrated.
    A `bus` given here is shared with other services in this process (the embedded mode): whoever made
    it starts and stops it."""
    async with AsyncExitStack() as stack:
        artifacts = create_artifact_store(settings)
        await artifacts.start()
        database = None
        if migrations is not None:
            database = await create_pool(settings, schema=service, application_name=f"flywheel-{service}")
            stack.push_async_callback(database.close)
            await migrate(database, service, migrations)
        if bus is None:
            bus = create_bus(settings, client_id=f"flywheel-{service}")
            stack.push_async_callback(bus.stop)
            await bus.start()
        yield Runtime(service, settings, bus, artifacts, database)


# A service's part of its app's lifespan; what it yields, if anything, becomes the ASGI lifespan state (which
# the server hands its HTTP protocol: how serving gives `shared.http_protocol` its fast routes).
ServiceLifespan = Callable[[FastAPI, Runtime], AbstractAsyncContextManager[Mapping[str, Any] | None]]


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDependency = Annotated[Runtime, Depends(get_runtime)]


class Liveness(BaseModel):
    status: str
    service: str


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, bool]


async def _metrics_access(request: Request) -> Principal | None:
    """/metrics answers anyone unless FLYWHEEL_METRICS_PUBLIC=false, then it needs READ."""
    runtime: Runtime = request.app.state.runtime
    return None if runtime.settings.metrics_public else await require(Permission.READ)(request)


def operations_router() -> APIRouter:
    """Health (always open, for orchestrators) and metrics."""
    router = APIRouter(tags=["operations"])

    @router.get("/health/live", response_model=Liveness)
    async def live(runtime: RuntimeDependency) -> Liveness:
        """The process is up and serving HTTP."""
        return Liveness(status="live", service=runtime.service)

    @router.get("/health/ready", response_model=Readiness, responses={503: {"model": Readiness}})
    async def ready(runtime: RuntimeDependency) -> Response:
        """Every dependency (bus, artifact store, database) answers; 503 names the ones that do not."""
        checks = await runtime.readiness()
        readiness = Readiness(ready=all(checks.values()), checks=checks)
        return JSONResponse(readiness.model_dump(), status_code=200 if readiness.ready else 503)

    @router.get("/metrics", response_class=Response, dependencies=[Depends(_metrics_access)])
    async def metrics() -> Response:
        """Prometheus metrics in the text exposition format."""
        return Response(metrics_exposition(), media_type=CONTENT_TYPE_LATEST)

    return router


class InvalidInput(BaseModel):
    """A 422's body: FastAPI's list of the request's fields that do not fit, or a sentence saying what does
    not."""

    detail: str | list[dict[str, Any]]


def unstorable_value(error: Exception) -> JSONResponse:
    """A value PostgreSQL cannot hold (a NUL character in text, a number beyond its column's range) came from
    the caller: a 422 saying which, not a 500."""
    reason = str(error).splitlines()[0]
    return JSONResponse({"detail": f"a value in the request cannot be stored: {reason}"}, status_code=422)


class EchoingJSONResponse(JSONResponse):
    """JSON that may echo what the caller sent, lone surrogates included (JSON's `\\ud800` escapes decode to
    them, and UTF-8 cannot hold them): each is written as `?` instead of failing the response with a 500."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode(
            "utf-8", "replace"
        )


async def refuse_invalid_request(request: Request, error: Exception) -> Response:
    """FastAPI's 422 for a body, path or query that does not validate, naming each field and why; the
    values it echoes may be text UTF-8 cannot hold (`EchoingJSONResponse`)."""
    assert isinstance(error, RequestValidationError)
    return EchoingJSONResponse({"detail": jsonable_encoder(error.errors())}, status_code=422)


async def refuse_unstorable_value(request: Request, error: Exception) -> Response:
    """`unstorable_value`, as an exception handler."""
    return unstorable_value(error)


def answer_errors(app: FastAPI, statuses: Mapping[type[Exception], int]) -> None:
    """Answer each of these exceptions, wherever a route raises it, with its status and
    `{"detail": "<the exception's message>"}` (the message names the problem)."""

    def handler(status: int) -> Callable[[Request, Exception], Awaitable[Response]]:
        async def respond(request: Request, error: Exception) -> Response:
            return JSONResponse({"detail": redact(str(error))}, status_code=status)

        return respond

    for error, status in statuses.items():
        app.add_exception_handler(error, handler(status))


@contextlib.contextmanager
def garbage_collector_for_throughput() -> Iterator[None]:
    """For a service that allocates a few objects per record at tens of thousands of records a second
    (serving, batch): what startup built is moved out of the collector's sight (gc.freeze) and the
    youngest generation is collected less often. With CPython's defaults (700, 10, 10), full collections
    of the whole heap, hundreds of milliseconds each, landed every few batches: bench/batch measured 25 CPU
    seconds per million records with them and 20 without. Undone on exit."""
    previous = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        gc.unfreeze()


def create_service_app(
    service: str,
    *,
    description: str,
    settings: FlywheelSettings,
    migrations: Path | None = None,
    routers: Iterable[APIRouter] = (),
    service_lifespan: ServiceLifespan | None = None,
    bus: EventBus | None = None,
    registry_url: str | None = None,
    upload_limits: Mapping[str, int] | None = None,
    app_class: type[FastAPI] = FastAPI,
) -> FastAPI:
    """A FastAPI app whose lifespan opens the runtime, then enters `service_lifespan`, where the service
    builds its domain objects on the runtime, subscribes its workers, and later stops them. `bus`: one
    the process shares between services (see `open_runtime`). Tokens are checked by asking the registry
    at `registry_url`; the registry itself (no `registry_url`) sets `app.state.authenticator` in its
    lifespan. Request bodies are limited to FLYWHEEL_MAX_BODY_BYTES, except on the routes `upload_limits`
    gives larger limits (path template -> bytes)."""

    @asynccontextmanager
    # Yields the service's lifespan state or None (typed Any: FastAPI's type admits one or the other).
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        async with (
            open_runtime(service, settings, migrations=migrations, bus=bus) as runtime,
            AsyncExitStack() as stack,
        ):
            app.state.runtime = runtime
            # What the hot routes count reaches Prometheus every second, and once more after the service
            # has stopped (the stack unwinds in reverse).
            stack.callback(flush_pending_metrics)
            await stack.enter_async_context(heartbeat(_flush_metrics, PENDING_FLUSH_SECONDS, "metrics-flush"))
            if settings.auth_enabled and registry_url is not None:
                http = httpx.AsyncClient(base_url=registry_url, timeout=5.0)
                stack.push_async_callback(http.aclose)
                verifier = TokenVerifier(registry_lookup(http), settings.auth_cache_seconds)
                app.state.authenticator = Authenticator(verifier)
            state = None
            if service_lifespan is not None:
                state = await stack.enter_async_context(service_lifespan(app, runtime))
            # Counted among the workers only now, as it starts accepting: the others hand it connections.
            this_workers_connection_counts()
            yield state

    app = app_class(title=f"Flywheel {service}", description=description, version="0.1.0", lifespan=lifespan)
    if not settings.auth_enabled:
        app.state.authenticator = Authenticator(None)
    # Inside the metrics middleware, so that its 413s are counted.
    app.add_middleware(RequestSizeLimit, max_bytes=settings.max_body_bytes, route_limits=upload_limits)
    app.add_middleware(PrometheusMiddleware, service=service)
    app.add_exception_handler(asyncpg.DataError, refuse_unstorable_value)
    app.add_exception_handler(RequestValidationError, refuse_invalid_request)
    hide_secrets(
        *(
            secret.get_secret_value()
            for secret in (settings.s3_secret_key, settings.service_token, settings.admin_token)
        )
    )
    app.include_router(operations_router())
    for router in routers:
        app.include_router(router)
    return app


async def _flush_metrics() -> None:
    flush_pending_metrics()


def run_service(
    service: str, app: FastAPI | str, settings: ServiceSettings, log_level: str, *, workers: int = 1
) -> None:
    """Serve `app` with uvicorn, logging JSON lines. Several `workers` share the port, each a process
    with the whole service; they need the app as the import string of a factory (`module:function`,
    called with no arguments), count their metrics in one directory so that /metrics sums them, and
    number themselves with `claim_worker_slot` and keep their connections even (`shared.http_protocol`)."""
    if workers > 1 and not isinstance(app, str):
        raise ValueError("several workers need the app as a factory's import string, 'module:function'")
    made: list[str] = []  # directories this call made for its workers, removed at the end
    if workers > 1:
        remove_orphaned_worker_directories()
        for variable, kind in (("PROMETHEUS_MULTIPROC_DIR", "metrics"), (WORKER_SLOTS_VARIABLE, "slots")):
            if variable not in os.environ:
                made.append(tempfile.mkdtemp(prefix=f"flywheel-{service}-{kind}-{os.getpid()}-"))
                os.environ[variable] = made[-1]  # inherited by the workers
        ConnectionCounts.create(Path(os.environ[WORKER_SLOTS_VARIABLE]) / CONNECTION_COUNTS_FILE, workers)
    try:
        uvicorn.run(
            app,
            factory=isinstance(app, str),
            host=settings.host,
            port=settings.port,
            workers=workers,
            log_config=logging_config(service, log_level),
            access_log=False,
            http=ServiceHttpProtocol,  # a response in one write; connections even across the workers
        )
    finally:
        for directory in made:
            shutil.rmtree(directory, ignore_errors=True)


async def _database_answers(pool: asyncpg.Pool) -> bool:
    return bool(await pool.fetchval("SELECT 1"))


async def _within_timeout(check: Callable[[], Awaitable[bool]]) -> bool:
    try:
        async with asyncio.timeout(READINESS_CHECK_TIMEOUT_SECONDS):
            return await check()
    except Exception:
        return False
