"""Signing in to the dashboard from a browser, which cannot send a bearer header with a page it opens.

`GET /login` is a form for a token; `POST /login` checks it like any request (it must be valid and may
read), keeps it in an HttpOnly, SameSite=Strict cookie and sends the browser back to the dashboard page it
came from. Reads with that cookie count as the bearer header (`shared.auth.SESSION_COOKIE`); writes never
do. A browser asking for a dashboard page without a token is sent here.
"""

from __future__ import annotations

import html
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.auth import SESSION_COOKIE, Authenticator, Permission, Refusal

router = APIRouter(tags=["dashboard"])
DEFAULT_NEXT = "/dashboard"
POLICY = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'self'"
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Flywheel: sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font: 15px/1.5 system-ui, sans-serif; margin: 3rem auto; max-width: 32rem; color: #1f2328; }}
input[type=password] {{ width: 100%; padding: .4rem; font: inherit; }}
button {{ margin-top: .8rem; padding: .4rem 1rem; font: inherit; }}
.error {{ color: #b42318; }}
</style></head>
<body><h1>Flywheel monitor</h1>
<p>Sign in with an API token (any role that may read). The first admin token is in
<code>FLYWHEEL_DATA_DIR/admin-token</code>; <code>flywheel tokens create</code> makes others.</p>
{error}
<form method="post" action="login">
<label for="token">Token</label>
<input type="password" id="token" name="token" autocomplete="current-password" required autofocus>
<input type="hidden" name="next" value="{next}">
<button type="submit">Sign in</button>
</form></body></html>
"""


def safe_next(target: str | None) -> str:
    """Where to send the browser after signing in: a dashboard page of this monitor, nothing else (an
    open redirect would let a link take a signed-in user anywhere)."""
    if target and target.startswith(DEFAULT_NEXT) and not target.startswith("//") and "\\" not in target:
        return target
    return DEFAULT_NEXT


def _page(next_target: str, error: str = "", status_code: int = 200) -> HTMLResponse:
    shown = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    body = PAGE.format(error=shown, next=html.escape(next_target, quote=True))
    headers = {"Content-Security-Policy": POLICY, "Cache-Control": "no-store"}
    return HTMLResponse(body, status_code=status_code, headers=headers)


@router.get("/login", response_class=HTMLResponse)
async def sign_in_page(next: str | None = None) -> HTMLResponse:
    """The sign-in form (HTML); `next` is the dashboard page to go back to."""
    return _page(safe_next(next))


@router.post(
    "/login",
    response_class=HTMLResponse,
    status_code=303,
    responses={
        401: {"description": "not a valid token: the form again, saying why"},
        403: {"description": "a token that may not read: the form again"},
        503: {"description": "the registry, which answers for tokens, did not: the form again"},
    },
)
async def sign_in(request: Request) -> Response:
    """Check the form's token; keep it in the session cookie and go back to `next` (303), or show the form
    again with why (401, 403, or 503 when the registry does not answer)."""
    form = await request.form()
    token, next_target = str(form.get("token", "")).strip(), safe_next(str(form.get("next", "")))
    authenticator: Authenticator = request.app.state.authenticator
    try:
        await authenticator.authorize(f"Bearer {token}", None, Permission.READ)
    except Refusal as refusal:
        return _page(
            next_target,
            refusal.detail,
            status_code=refusal.status_code,
        )
    response = RedirectResponse(next_target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


def send_browsers_to_sign_in(app: FastAPI) -> None:
    """A browser asking for a dashboard page without a valid token goes to the sign-in form (303); every
    other refusal is answered as FastAPI answers it."""

    async def handle(request: Request, error: Exception) -> Response:
        assert isinstance(error, StarletteHTTPException)
        wants_page = "text/html" in request.headers.get("accept", "")
        if error.status_code == 401 and wants_page and request.url.path.startswith(DEFAULT_NEXT):
            return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
        return await http_exception_handler(request, error)

    app.add_exception_handler(StarletteHTTPException, handle)
