"""A limit on the size of every request body, as ASGI middleware every service app has.

Bodies are refused beyond `max_bytes` (FLYWHEEL_MAX_BODY_BYTES, 1 MiB: JSON) with a 413 naming the limit:
when the declared Content-Length is over it, before a byte is read, else as soon as the bytes received pass
it, so nothing larger is ever held. Routes that stream an upload to storage (ONNX models, datasets, batch
files, run artifacts) have larger limits of their own (`route_limits`); serving's inference routes are
answered before this middleware, with theirs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_MAX_BODY_BYTES = 1024 * 1024


class RequestSizeLimit:
    """ASGI middleware: 413 for a body over `max_bytes`, or over the limit `route_limits` gives its route
    (path templates such as `/models/{name}/versions`, any method)."""

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, route_limits: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.route_limits: list[tuple[re.Pattern[str], int]] = [
            (compile_path(route)[0], limit) for route, limit in (route_limits or {}).items()
        ]

    def limit_of(self, path: str) -> int:
        return next((limit for pattern, limit in self.route_limits if pattern.match(path)), self.max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_of(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            response = JSONResponse({"detail": too_large(limit, declared)}, 413)
            await response(scope, receive, send)
            return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                # Raised where the app reads its body: FastAPI passes HTTPExceptions on to its handler.
                raise HTTPException(413, too_large(limit))
            return message

        await self.app(scope, counted_receive, send)


def too_large(limit: int, size: int | None = None) -> str:
    """What a 413 says: the body's size when known, and the limit."""
    body = "the body is more" if size is None else f"the body is {size} bytes, more"
    return f"{body} than the limit of {limit} bytes for this route"


def _content_length(scope: Scope) -> int | None:
    for key, value in scope["headers"]:
        if key == b"content-length":
            return int(value) if value.isdigit() else None
    return None
