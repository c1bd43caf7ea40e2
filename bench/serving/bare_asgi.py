"""The Python HTTP ceiling: a raw ASGI callable that reads the request body and answers a constant JSON
prediction, with no framework, no parsing and no model. Started by the serving benchmark as
`uvicorn bench.serving.bare_asgi:app --workers 2 --lifespan off`."""

from __future__ import annotations

from starlette.types import Receive, Scope, Send

ANSWER = b'{"predictions":[{"label":0,"probabilities":[1.0,0.0]}]}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    more_body = True
    while more_body:  # read the whole body, as any real server must
        message = await receive()
        more_body = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})
