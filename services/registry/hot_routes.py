"""The busiest run routes (start a run, log a batch, end a run, search) as a lean ASGI layer in front of
FastAPI.

A logged run is the first three requests, and FastAPI's machinery around each (middleware stack, routing,
dependency solving, the body parsed by the json module then validated from Python objects, the response
wrapped) cost the registry more CPU than the endpoints themselves; around a search, about a third of its
CPU. So they are matched here first and, when a request is one they can take whole (a JSON body within
the size limit that fits its model, from a caller with the route's permission), answered here: the body
validated by pydantic's JSON parser, the answer sent as raw ASGI messages, counted in the same HTTP
metrics. Every other request, including every one FastAPI would
refuse (no token, a bad body, over the limit), goes on to FastAPI with its body as if unread, so those
answers stay FastAPI's own. The routes stay registered with FastAPI, which documents them in OpenAPI.
"""

from __future__ import annotations

import time

import asyncpg
from pydantic import ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from services.registry.endpoints import ANSWERED_ERRORS, problem_answer
from services.registry.schemas import LogBatch, RunCreate, RunSearch, RunUpdate
from services.registry.tracking import TrackingService
from shared.auth import Permission, Principal, Refusal, authorize_scope
from shared.hot_routes import ReadAhead, header, send_json
from shared.service import unstorable_value
from shared.telemetry import RouteMetrics

CREATE_RUN = "/runs"
LOG_BATCH = "/runs/{run_id}/log-batch"
UPDATE_RUN = "/runs/{run_id}"
SEARCH_RUNS = "/runs/search"
METHODS = {CREATE_RUN: "POST", LOG_BATCH: "POST", UPDATE_RUN: "PATCH", SEARCH_RUNS: "POST"}
Body = RunCreate | LogBatch | RunUpdate | RunSearch
BODIES: dict[str, type[Body]] = {
    CREATE_RUN: RunCreate,
    LOG_BATCH: LogBatch,
    UPDATE_RUN: RunUpdate,
    SEARCH_RUNS: RunSearch,
}
# What each route needs, as its FastAPI route's dependency asks (endpoints.py).
PERMISSIONS = {
    CREATE_RUN: Permission.TRACK,
    LOG_BATCH: Permission.TRACK,
    UPDATE_RUN: Permission.TRACK,
    SEARCH_RUNS: Permission.READ,
}
# What FastAPI sends for the log-batch's 204 (the route's JSON content type, no body).
NO_CONTENT = {
    "type": "http.response.start",
    "status": 204,
    "headers": [(b"content-type", b"application/json")],
}


def match_run_route(method: str, path: str) -> tuple[str, str | None] | None:
    """(route template, run id) of a request to one of these routes, else None. A run id is one non-empty
    path segment, as FastAPI matches `{run_id}`."""
    if path in (CREATE_RUN, SEARCH_RUNS):
        return (path, None) if method == "POST" else None
    if not path.startswith("/runs/"):
        return None
    rest = path[len("/runs/") :]
    if method == "PATCH" and rest and "/" not in rest:
        return UPDATE_RUN, rest
    if method == "POST" and rest.endswith("/log-batch"):
        run_id = rest[: -len("/log-batch")]
        if run_id and "/" not in run_id:
            return LOG_BATCH, run_id
    return None


def is_json(content_type: bytes | None) -> bool:
    return content_type is not None and content_type.split(b";")[0].strip().lower() == b"application/json"


class HotRunRoutes:
    """ASGI layer: answers the requests to these routes it can take whole, passes everything else to `app`."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = RouteMetrics("registry")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = match_run_route(scope["method"], scope["path"]) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        template, run_id = route
        request = ReadAhead(receive)
        taken = await self._take(scope, request, template)
        if taken is None:
            await self.app(scope, request.receive, send)  # FastAPI answers it, as it always did
            return
        principal, body = taken
        tracking: TrackingService = scope["app"].state.tracking
        try:
            status = await self._answer(send, tracking, run_id, body, principal)
        except (*ANSWERED_ERRORS, asyncpg.DataError) as error:
            refusal = (
                unstorable_value(error) if isinstance(error, asyncpg.DataError) else problem_answer(error)
            )
            status = refusal.status_code
            await refusal(scope, request.receive, send)
        except Exception:
            self.metrics.observe(METHODS[template], template, 500, started)
            raise  # uvicorn answers 500 and logs it, as after FastAPI's ServerErrorMiddleware
        self.metrics.observe(METHODS[template], template, status, started)

    async def _take(self, scope: Scope, request: ReadAhead, template: str) -> tuple[Principal, Body] | None:
        """The caller and the parsed body, when this layer can answer the request; None leaves it to FastAPI:
        a content type other than JSON, a body over the limit or none, a refused token, a body that does not
        fit its model (FastAPI says why, in its words)."""
        if not is_json(header(scope, b"content-type")):
            return None
        declared = header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            return None
        try:
            principal = await authorize_scope(scope, PERMISSIONS[template])
        except Refusal:
            return None
        body = await request.body(self.max_body_bytes)
        if not body:
            return None
        try:
            return principal, BODIES[template].model_validate_json(body)
        except ValidationError:
            return None

    @staticmethod
    async def _answer(
        send: Send,
        tracking: TrackingService,
        run_id: str | None,
        body: Body,
        principal: Principal,
    ) -> int:
        """Call the service and send its answer; the status sent."""
        if isinstance(body, RunSearch):
            page = await tracking.search_runs(body, principal)
            await send_json(send, 200, page.model_dump_json().encode())
            return 200
        if isinstance(body, RunCreate):
            run = await tracking.create_run(body, principal)
            await send_json(send, 201, run.model_dump_json().encode())
            return 201
        assert run_id is not None
        if isinstance(body, LogBatch):
            await tracking.log_batch(run_id, body, principal)
            await send(NO_CONTENT)
            await send({"type": "http.response.body", "body": b""})
            return 204
        run = await tracking.update_run(run_id, body, principal)
        await send_json(send, 200, run.model_dump_json().encode())
        return 200
