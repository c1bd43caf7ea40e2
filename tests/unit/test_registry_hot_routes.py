"""The run routes answered before FastAPI (services/registry/hot_routes.py): what they take they answer as
FastAPI did, what they do not take reaches FastAPI untouched; both counted and documented."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, ClassVar

import asyncpg
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.registry.app import create_app
from services.registry.errors import Conflict, InvalidRequest, NotFound
from services.registry.hot_routes import NO_CONTENT, HotRunRoutes, match_run_route
from services.registry.schemas import LogBatch, Run, RunCreate, RunPage, RunSearch, RunUpdate
from services.registry.search import compile_search
from shared.auth import Authenticator, Principal, Role, TokenVerifier
from shared.pagination import decode_page_token, encode_page_token
from shared.settings import FlywheelSettings
from shared.telemetry import flush_pending_metrics

MAX_BODY_BYTES = 2_000
STARTED = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
TOKENS = {
    "fw_scientist": Principal(user="ana", workspace="default", role=Role.DATA_SCIENTIST),
    "fw_viewer": Principal(user="vic", workspace="default", role=Role.VIEWER),
}


class StubTracking:
    """Answers as the tracking service would; run ids name the failure to raise."""

    failures: ClassVar[dict[str, Exception]] = {
        "missing": NotFound("no run with id 'missing'"),
        "conflict": Conflict("param 'p' of run conflict is 'a' already; params are immutable (offered 'b')"),
        "twice": InvalidRequest("param 'p' appears twice in the batch with different values"),
        "unstorable": asyncpg.DataError(
            "invalid input for query argument $6: 99999999999999999999 (out of range)"
        ),
        "broken": RuntimeError("the database went away"),
    }

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def _run(self, run_id: str, status: str = "running") -> Run:
        if run_id in self.failures:
            raise self.failures[run_id]
        return Run(
            id=run_id,
            experiment_id="e1",
            name="run-1",
            status=status,
            start_time=STARTED,
            end_time=None,
            tags={},
            dataset_fingerprint=None,
            code_version=None,
            params={"p0": "rf"},
            metrics={"auc": 0.9},
        )

    async def create_run(self, request: RunCreate, principal: Principal) -> Run:
        self.calls.append(("create", request))
        return self._run(request.experiment_id or "r1")

    async def log_batch(self, run_id: str, batch: LogBatch, principal: Principal) -> None:
        self.calls.append(("log", batch))
        self._run(run_id)

    async def update_run(self, run_id: str, request: RunUpdate, principal: Principal) -> Run:
        self.calls.append(("update", request))
        return self._run(run_id, request.status or "running")

    async def search_runs(self, search: RunSearch, principal: Principal) -> RunPage:
        self.calls.append(("search", search))
        offset = decode_page_token(search.page_token)  # raises what the service raises
        compile_search(search.filter, search.order_by, first_placeholder=3)
        runs = [self._run(experiment_id) for experiment_id in search.experiment_ids]
        return RunPage(runs=runs, next_page_token=encode_page_token(offset + len(runs)))


class Registry:
    """The registry's app on a stub service, with a way to send a request through the hot layer (`hot`) or
    through FastAPI alone (`fastapi`), and a count of the requests the hot layer left to FastAPI."""

    def __init__(self, *, auth: bool) -> None:
        self.app = create_app(FlywheelSettings(auth_enabled=False, max_body_bytes=MAX_BODY_BYTES))
        self.app.state.tracking = StubTracking()
        if auth:

            async def lookup(token: str) -> Principal | None:
                return TOKENS.get(token)

            self.app.state.authenticator = Authenticator(TokenVerifier(lookup, 60))
        self.passed_on = 0

        async def fastapi_alone(scope: Scope, receive: Receive, send: Send) -> None:
            self.passed_on += 1
            await FastAPI.__call__(self.app, scope, receive, send)

        self.layer = HotRunRoutes(fastapi_alone, max_body_bytes=MAX_BODY_BYTES)

    async def hot(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self.app  # as the app sets it before its layer
        await self.layer(scope, receive, send)

    async def fastapi(self, scope: Scope, receive: Receive, send: Send) -> None:
        await FastAPI.__call__(self.app, scope, receive, send)


def call(
    app: ASGIApp,
    method: str,
    path: str,
    chunks: list[bytes],
    headers: dict[str, str] | None = None,
) -> list[Message]:
    """The ASGI messages `app` sends for a request whose body arrives in `chunks`."""
    incoming: list[Message] = [
        {"type": "http.request", "body": chunk, "more_body": index < len(chunks) - 1}
        for index, chunk in enumerate(chunks)
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "scheme": "http",
        "query_string": b"",
        "headers": [(key.lower().encode(), value.encode()) for key, value in (headers or {}).items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8081),
        "state": {},
    }

    async def request() -> None:
        await app(scope, receive, send)

    asyncio.run(request())
    return sent


def json_headers(body: bytes, **more: str) -> dict[str, str]:
    return {"content-type": "application/json", "content-length": str(len(body)), **more}


def requests_counted(method: str, route: str, status: int) -> float:
    """As a scrape of /metrics reads it (which first flushes what the hot routes counted)."""
    flush_pending_metrics()
    labels = {"service": "registry", "method": method, "route": route, "status": str(status)}
    return REGISTRY.get_sample_value("flywheel_http_requests_total", labels) or 0.0


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/runs", ("/runs", None)),
        ("POST", "/runs/abc/log-batch", ("/runs/{run_id}/log-batch", "abc")),
        ("PATCH", "/runs/abc", ("/runs/{run_id}", "abc")),
        ("POST", "/runs/search", ("/runs/search", None)),
        ("GET", "/runs/search", None),
        ("PATCH", "/runs/search", None),  # FastAPI's: a run named "search", which there is not
        ("GET", "/runs/abc", None),
        ("PATCH", "/runs", None),
        ("POST", "/runs/", None),
        ("PATCH", "/runs/abc/", None),
        ("POST", "/runs//log-batch", None),
        ("POST", "/runs/a/b/log-batch", None),
        ("POST", "/runs/abc/log-batch/", None),
        ("POST", "/experiments", None),
    ],
)
def test_only_the_four_hot_routes_are_matched(
    method: str, path: str, expected: tuple[str, str | None] | None
) -> None:
    assert match_run_route(method, path) == expected


LOG_BATCH_BODY = b'{"params":[{"key":"p0","value":"rf"}],"metrics":[{"key":"auc","value":0.9,"step":1}]}'
TAKEN = [
    ("POST", "/runs", b'{"experiment_id":"e1","start_time":"2026-11-23T12:00:00+00:00"}'),
    ("POST", "/runs/r1/log-batch", LOG_BATCH_BODY),
    ("PATCH", "/runs/r1", b'{"status":"finished","end_time":"2026-11-23T12:01:00Z"}'),
    ("POST", "/runs/missing/log-batch", LOG_BATCH_BODY),
    ("PATCH", "/runs/missing", b'{"status":"finished"}'),
    ("POST", "/runs", b'{"experiment_id":"missing"}'),
    ("POST", "/runs/conflict/log-batch", LOG_BATCH_BODY),
    ("POST", "/runs/twice/log-batch", LOG_BATCH_BODY),
    ("PATCH", "/runs/unstorable", b'{"name":"x"}'),
    ("POST", "/runs/search", b'{"experiment_ids":["r1","r2"],"filter":"metrics.auc > 0.8","order_by":[]}'),
    ("POST", "/runs/search", b'{"filter":"metrics.auc >> 0.8"}'),  # a bad filter: where, and on what
    ("POST", "/runs/search", b'{"order_by":["metrics.auc SIDEWAYS"]}'),
    ("POST", "/runs/search", b'{"page_token":"not-a-token"}'),
    ("POST", "/runs/search", b'{"experiment_ids":["missing"]}'),
]


@pytest.mark.parametrize(("method", "path", "body"), TAKEN)
def test_what_the_hot_routes_take_they_answer_as_fastapi_does(method: str, path: str, body: bytes) -> None:
    registry = Registry(auth=False)
    hot = call(registry.hot, method, path, [body], json_headers(body))
    assert registry.passed_on == 0
    assert hot == call(registry.fastapi, method, path, [body], json_headers(body))
    calls = registry.app.state.tracking.calls
    assert calls[0] == calls[1]  # the same request reached the service


def test_a_batch_is_parsed_as_fastapi_parses_it() -> None:
    registry = Registry(auth=False)
    body = (
        b'{"params":[{"key":"n","value":3}],'
        b'"metrics":[{"key":"m","value":NaN,"timestamp":"2026-11-23T12:00:00Z"}]}'
    )
    call(registry.hot, "POST", "/runs/r1/log-batch", [body], json_headers(body))
    call(registry.fastapi, "POST", "/runs/r1/log-batch", [body], json_headers(body))
    (_, hot), (_, fastapi) = registry.app.state.tracking.calls
    assert hot.model_dump_json() == fastapi.model_dump_json()
    assert hot.params[0].value == "3"


LEFT_TO_FASTAPI = [
    # (method, path, body chunks, headers, status FastAPI answers)
    ("POST", "/runs", [b'{"experiment_id":5}'], None, 422),  # a field of the wrong type, named
    ("POST", "/runs", [b'{"experiment_id":"e1","colour":"red"}'], None, 422),  # an unknown field
    ("POST", "/runs/r1/log-batch", [b'{"metrics":[{"key":"auc"}]}'], None, 422),  # a missing field
    ("PATCH", "/runs/r1", [b'{"status":"paused"}'], None, 422),
    ("POST", "/runs/search", [b'{"max_results":0}'], None, 422),
    ("POST", "/runs", [b'{"experiment_id":"e1"'], None, 422),  # not JSON
    ("POST", "/runs", [b"[]"], None, 422),
    ("POST", "/runs", [b""], None, 422),  # no body
    ("POST", "/runs", [b'{"experiment_id":"e1"}'], {"content-type": "text/plain"}, 422),
    ("POST", "/runs", [b'{"experiment_id":"e1"}'], {"content-type": ""}, 422),
    ("POST", "/runs", [b'\xef\xbb\xbf{"experiment_id":"e1"}'], None, 201),  # a BOM: only json.loads reads it
    ("POST", "/runs", [b"{" + b" " * MAX_BODY_BYTES + b"}"], None, 413),  # declared over the limit
    (
        "POST",
        "/runs",
        [b"{" + b" " * 1500, b" " * 1500 + b"}"],
        {"content-length": ""},
        413,
    ),  # streamed over it
]


@pytest.mark.parametrize(("method", "path", "chunks", "headers", "status"), LEFT_TO_FASTAPI)
def test_what_the_hot_routes_do_not_take_reaches_fastapi_untouched(
    method: str, path: str, chunks: list[bytes], headers: dict[str, str] | None, status: int
) -> None:
    body = b"".join(chunks)
    sent_headers = {k: v for k, v in {**json_headers(body), **(headers or {})}.items() if v}
    registry = Registry(auth=False)
    hot = call(registry.hot, method, path, chunks, sent_headers)
    assert registry.passed_on == 1
    assert hot == call(registry.fastapi, method, path, chunks, sent_headers)
    assert hot[0]["status"] == status, hot


@pytest.mark.parametrize(
    ("token", "status"), [(None, 401), ("fw_unknown", 401), ("fw_viewer", 403), ("fw_scientist", 201)]
)
def test_with_access_control_on_the_caller_needs_track(token: str | None, status: int) -> None:
    registry = Registry(auth=True)
    body = b'{"experiment_id":"e1"}'
    headers = json_headers(body, **({"authorization": f"Bearer {token}"} if token else {}))
    hot = call(registry.hot, "POST", "/runs", [body], headers)
    assert hot[0]["status"] == status
    assert registry.passed_on == (0 if status == 201 else 1)
    assert hot == call(registry.fastapi, "POST", "/runs", [body], headers)


def test_an_unexpected_failure_is_raised_to_the_server_and_counted_as_a_500() -> None:
    registry = Registry(auth=False)
    before = requests_counted("PATCH", "/runs/{run_id}", 500)
    with pytest.raises(RuntimeError, match="the database went away"):
        call(registry.hot, "PATCH", "/runs/broken", [b"{}"], json_headers(b"{}"))
    assert requests_counted("PATCH", "/runs/{run_id}", 500) == before + 1


def test_answered_requests_are_counted_under_their_route() -> None:
    registry = Registry(auth=False)
    before = requests_counted("POST", "/runs/{run_id}/log-batch", 204)
    call(registry.hot, "POST", "/runs/r1/log-batch", [LOG_BATCH_BODY], json_headers(LOG_BATCH_BODY))
    assert requests_counted("POST", "/runs/{run_id}/log-batch", 204) == before + 1
    before = requests_counted("POST", "/runs/{run_id}/log-batch", 404)
    call(registry.hot, "POST", "/runs/missing/log-batch", [LOG_BATCH_BODY], json_headers(LOG_BATCH_BODY))
    assert requests_counted("POST", "/runs/{run_id}/log-batch", 404) == before + 1


def test_the_app_tries_them_before_fastapi() -> None:
    registry = Registry(auth=False)
    assert call(
        registry.app, "POST", "/runs/r1/log-batch", [LOG_BATCH_BODY], json_headers(LOG_BATCH_BODY)
    ) == [
        NO_CONTENT,
        {"type": "http.response.body", "body": b""},
    ]
    assert registry.app.middleware_stack is None  # Starlette builds it on the first request it handles
    call(registry.app, "POST", "/runs", [b"{}"], {"content-type": "text/plain"})
    assert registry.app.middleware_stack is not None


@pytest.mark.parametrize(
    ("method", "path", "request_model", "status", "answer_model"),
    [
        ("post", "/runs", "RunCreate", "201", "Run"),
        ("post", "/runs/{run_id}/log-batch", "LogBatch", "204", None),
        ("patch", "/runs/{run_id}", "RunUpdate", "200", "Run"),
        ("post", "/runs/search", "RunSearch", "200", "RunPage"),
    ],
)
def test_openapi_still_documents_them_with_their_models(
    method: str, path: str, request_model: str, status: str, answer_model: str | None
) -> None:
    operation = create_app(FlywheelSettings(auth_enabled=False)).openapi()["paths"][path][method]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": f"#/components/schemas/{request_model}"}
    if answer_model is not None:
        answer = operation["responses"][status]["content"]["application/json"]["schema"]
        assert answer == {"$ref": f"#/components/schemas/{answer_model}"}
    assert {status, "400", "404", "413", "422"} <= set(operation["responses"])
