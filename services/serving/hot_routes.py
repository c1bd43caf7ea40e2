"""The inference routes, answered before FastAPI's routing: by uvicorn's protocol itself (its fast lane), or
by a lean ASGI layer in front of FastAPI.

At thousands of requests a second, FastAPI's per-route machinery (dependency solving, Request and
Response objects, exception middleware, the metrics middleware's wrapping) costs more than inferring a
small model, and under serving's own processes even ASGI's request cycle costs a fifth of the event loop's
time a 1-row request. So what the three inference routes do lives in one place, `InferenceRoutes`, which
two layers call:

- uvicorn's protocol (`shared.http_protocol.ServiceHttpProtocol`) finds it in the lifespan state and answers
  the requests it can from the parsed request, writing the answer itself (the fast lane);
- `HotInferenceRoutes`, an ASGI layer in front of FastAPI, answers the rest: under any other server
  (the tests' ASGI transport), and the requests the lane leaves to uvicorn (HTTP/1.0, `Expect:
  100-continue`, chunked or oversized bodies, or `FLYWHEEL_SERVING_FAST_LANE=false`).

Their OpenAPI description is written by hand (`openapi_paths`), and they count themselves in the same
HTTP metrics as every other route.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from services.serving.batching import BatcherStopped
from services.serving.metrics import REQUEST_ERRORS
from services.serving.service import Answer, InferenceService
from shared.auth import Authenticator, Permission, Refusal, authorize_headers
from shared.hot_routes import ClientGone, Reply, send_reply
from shared.model_versions import ModelNotFound, ModelUnavailable, RegistryUnavailable
from shared.telemetry import RouteMetrics, redact
from shared.tensors import InvalidInput

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"
VERSION_HEADER = "X-Model-Version"
V2_INFER = "/v2/models/{name}/infer"
V2_VERSION_INFER = "/v2/models/{name}/versions/{version}/infer"
V1_PREDICT = "/v1/models/{name}:predict"

# (route template, model name, version as written or None)
InferenceRoute = tuple[str, str, str | None]


class RequestTooLarge(ValueError):
    pass


ERROR_STATUS: dict[type[Exception], int] = {
    ModelNotFound: 404,
    RequestTooLarge: 413,
    InvalidInput: 422,
    ModelUnavailable: 503,
    RegistryUnavailable: 503,
    BatcherStopped: 503,
}


def match_inference_route(path: str) -> InferenceRoute | None:
    """The inference route a path is, else None. A version that is not a number is still this route's
    (answered 422), not an unknown path's bare 404."""
    if path.startswith("/v2/models/") and path.endswith("/infer"):
        middle = path[len("/v2/models/") : -len("/infer")]
        if middle and "/" not in middle:
            return V2_INFER, middle, None
        name, versions, version = middle.partition("/versions/")
        if versions and name and "/" not in name and version and "/" not in version:
            return V2_VERSION_INFER, name, version
        return None
    if path.startswith("/v1/models/") and path.endswith(":predict"):
        name = path[len("/v1/models/") : -len(":predict")]
        if name and "/" not in name:
            return V1_PREDICT, name, None
    return None


class InferenceRoutes:
    """What the inference routes do with a request, whichever layer carries it (see the module's
    docstring): access control, the body limit, inference, and every error as a status with a JSON body
    naming it. The fast routes of serving's HTTP protocol (`shared.http_protocol.FastRoutes`)."""

    def __init__(self, inference: InferenceService, authenticator: Authenticator, *, max_body_bytes: int):
        self.inference = inference
        self.authenticator = authenticator
        self.max_body_bytes = max_body_bytes
        self.metrics = RouteMetrics("serving")

    def match(self, method: bytes, path: str) -> InferenceRoute | None:
        return match_inference_route(path) if method == b"POST" else None

    async def answer(
        self,
        route: InferenceRoute,
        headers: Iterable[tuple[bytes, bytes]],
        read_body: Callable[[], Awaitable[bytes]],
    ) -> Reply | None:
        """The reply to one request, or None when the caller left before its body arrived. `headers`: raw,
        names in lower case; `read_body`: the whole body (RequestTooLarge past `max_body_bytes`, ClientGone
        when the caller leaves)."""
        started = time.perf_counter()
        template, name, version_text = route
        request_id, declared_length = _request_id_and_length(headers)
        try:
            principal = await authorize_headers(self.authenticator, headers, Permission.INFER)
            version = None if version_text is None else _version_number(version_text)
            limit = self.max_body_bytes
            if declared_length is not None and declared_length > limit:
                raise RequestTooLarge(f"the body is {declared_length} bytes; the limit is {limit}")
            body = await read_body()
            if template == V1_PREDICT:
                answer = await self.inference.predict_v1(name, body, request_id, principal.scope)
            else:
                answer = await self.inference.infer_v2(name, body, version, request_id, principal.scope)
            reply = _answer_reply(answer)
        except ClientGone:
            return None
        except Refusal as refusal:
            challenge = ((b"www-authenticate", b"Bearer"),) if refusal.status_code == 401 else ()
            reply = Reply(refusal.status_code, orjson.dumps({"error": refusal.detail}), challenge)
        except Exception as error:
            status = ERROR_STATUS.get(type(error), 500)
            if status == 500:
                log.exception("inference failed", extra={"model": name})
                message = f"internal error ({type(error).__name__}); see the service's log"
            else:
                message = redact(str(error))
            REQUEST_ERRORS.labels(name, str(status)).inc()
            reply = Reply(status, orjson.dumps({"error": message}))
        self.metrics.observe("POST", template, reply.status, started)
        return reply


class HotInferenceRoutes:
    """ASGI middleware: POSTs to the inference routes go to the app's `InferenceRoutes` (made in its
    lifespan, `app.state.inference_routes`), everything else to `app`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        route = match_inference_route(scope["path"])
        if route is None:
            await self.app(scope, receive, send)
            return
        routes: InferenceRoutes = scope["app"].state.inference_routes
        read_body = functools.partial(_read_asgi_body, receive, routes.max_body_bytes)
        reply = await routes.answer(route, scope["headers"], read_body)
        if reply is not None:
            await send_reply(send, reply)


def _version_number(text: str) -> int:
    if not text.isdigit():
        raise InvalidInput(f"the version must be a whole number, not {text!r}")
    return int(text)


def _request_id_and_length(headers: Iterable[tuple[bytes, bytes]]) -> tuple[str | None, int | None]:
    """The caller's request id and the declared body length."""
    request_id = None
    length = None
    for key, value in headers:
        if key == b"x-request-id":
            request_id = value.decode("latin-1")[:256] or None
        elif key == b"content-length" and value.isdigit():
            length = int(value)
    return request_id, length


async def _read_asgi_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(f"the body is larger than the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _answer_reply(answer: Answer) -> Reply:
    headers = (
        (b"x-model-version", str(answer.model.version).encode()),
        (b"x-request-id", answer.request_id.encode("latin-1", "replace")),
    )
    return Reply(200, orjson.dumps(answer.body), headers)


def openapi_paths(v2_body: dict[str, Any], v1_body: dict[str, Any]) -> dict[str, Any]:
    """The hot routes' OpenAPI path items, written by hand since FastAPI never sees them."""
    problem = {
        "description": "the error, named",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    errors = {
        "404": {**problem, "description": "no such model, version or alias"},
        "413": {**problem, "description": "the body is over the configured limit"},
        "422": {**problem, "description": "the inputs do not fit the model's signature"},
        "503": {**problem, "description": "the version cannot be loaded or the registry does not answer"},
    }
    answer_headers = {
        VERSION_HEADER: {"description": "the version that answered", "schema": {"type": "string"}},
        REQUEST_ID_HEADER: {
            "description": "the request id, also in prediction-logged",
            "schema": {"type": "string"},
        },
    }
    request_id = {
        "name": REQUEST_ID_HEADER,
        "in": "header",
        "required": False,
        "description": "the caller's id for this request; one is made up when absent",
        "schema": {"type": "string", "maxLength": 256},
    }
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    version = {"name": "version", "in": "path", "required": True, "schema": {"type": "integer"}}

    def operation(
        summary: str, operation_id: str, parameters: list[Any], body: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "post": {
                "tags": ["inference"],
                "summary": summary,
                "operationId": operation_id,
                "parameters": [*parameters, request_id],
                **body,
                "responses": {
                    "200": {
                        "description": "the outputs, with the version that answered",
                        "headers": answer_headers,
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    **errors,
                },
            }
        }

    return {
        V2_INFER: operation(
            "Infer with the version the traffic policy picks (by default the one behind `production`)",
            "infer",
            [name],
            v2_body,
        ),
        V2_VERSION_INFER: operation(
            "Infer with one explicit version", "infer_version", [name, version], v2_body
        ),
        V1_PREDICT: operation(
            '`{"instances": [[...], ...]}` or `{"instances": [{"feature": value, ...}]}` in; labels and '
            "class probabilities out, with the version that answered",
            "predict",
            [name],
            v1_body,
        ),
    }
