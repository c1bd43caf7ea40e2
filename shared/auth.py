"""Who is calling and what they may do: roles, permissions, principals and the bearer-token check every
service runs the same way.

A token (`fw_...`) belongs to a user and a workspace and has one role; the registry issues, revokes and
answers for tokens (`GET /auth/whoami`). Every other service asks the registry through a `TokenVerifier`,
which remembers each answer, yes or no, for a few seconds (`FLYWHEEL_AUTH_CACHE_SECONDS`): serving's hot
path then pays a dict lookup per request, and a revoked token stops working within that time.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from enum import StrEnum

import httpx
from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import Scope

from shared.settings import FlywheelSettings

TOKEN_PREFIX = "fw_"
DEFAULT_WORKSPACE = "default"
ALL_WORKSPACES = "*"  # only the service role: services act for every workspace
WORKSPACE_PATTERN = r"^([a-z0-9][a-z0-9_-]{0,62}|\*)$"
# A service token may name the workspace it acts for (a trainer job of workspace X creates X's runs).
WORKSPACE_HEADER = "x-flywheel-workspace"
WORKSPACE_HEADER_BYTES = WORKSPACE_HEADER.encode()
# A browser cannot send a bearer header with a page it opens: the monitor's sign-in page keeps the token in
# this cookie (HttpOnly, SameSite=Strict), which reads count as the header (never writes: no CSRF).
SESSION_COOKIE = "flywheel_token"
MAX_CACHED_TOKENS = 10_000
# The embedded platform's first admin token, in FLYWHEEL_DATA_DIR (mode 0600), where clients find it.
ADMIN_TOKEN_FILE = "admin-token"


class Role(StrEnum):
    ADMIN = "admin"
    ML_ENGINEER = "ml-engineer"
    DATA_SCIENTIST = "data-scientist"
    VIEWER = "viewer"
    PREDICTOR = "predictor"
    SERVICE = "service"  # service-to-service calls: everything but token administration


class Permission(StrEnum):
    READ = "read"  # any GET: experiments, runs, models, jobs, dashboards, alerts
    TRACK = "track"  # experiments, runs, params, metrics, run artifacts
    REGISTER = "register"  # models, versions, tags, aliases other than `production`
    PROMOTE_PRODUCTION = "promote_production"  # the `production` alias, traffic policies
    TRAIN = "train"  # training jobs, datasets
    RETRAIN = "retrain"  # retraining and its schedules
    BATCH = "batch"  # batch scoring jobs
    MONITOR = "monitor"  # monitoring policies, subscriptions
    INFER = "infer"  # serving's inference routes
    ADMIN = "admin"  # tokens


_DATA_SCIENTIST = frozenset({Permission.READ, Permission.TRACK, Permission.REGISTER, Permission.TRAIN})
_ML_ENGINEER = _DATA_SCIENTIST | {
    Permission.PROMOTE_PRODUCTION,
    Permission.RETRAIN,
    Permission.BATCH,
    Permission.MONITOR,
    Permission.INFER,
}
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.ML_ENGINEER: _ML_ENGINEER,
    Role.DATA_SCIENTIST: _DATA_SCIENTIST,
    Role.VIEWER: frozenset({Permission.READ}),
    Role.PREDICTOR: frozenset({Permission.INFER}),
    Role.SERVICE: frozenset(Permission) - {Permission.ADMIN},
}


class Principal(BaseModel):
    """Who a request acts as: the token's user, workspace and role."""

    model_config = ConfigDict(frozen=True)

    user: str
    workspace: str = Field(pattern=WORKSPACE_PATTERN)
    role: Role
    token_id: str | None = None

    def can(self, permission: Permission) -> bool:
        return permission in ROLE_PERMISSIONS[self.role]

    @property
    def scope(self) -> str | None:
        """The one workspace this principal sees, or None for all of them (a service acting for none)."""
        return None if self.workspace == ALL_WORKSPACES else self.workspace

    @property
    def home_workspace(self) -> str:
        """Where what this principal creates goes."""
        return DEFAULT_WORKSPACE if self.workspace == ALL_WORKSPACES else self.workspace

    def sees(self, workspace: str) -> bool:
        return self.workspace in (ALL_WORKSPACES, workspace)


# Every request's principal when access control is off (FLYWHEEL_AUTH_ENABLED=false).
ANONYMOUS = Principal(user="anonymous", workspace=DEFAULT_WORKSPACE, role=Role.ADMIN)


def new_token() -> str:
    """A fresh secret token: `fw_` and 32 random bytes, URL-safe."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What is stored of a token: its sha256 (tokens are random, so no salt or slow hash is needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class AuthUnavailable(RuntimeError):
    """The registry, which answers for tokens, did not answer."""


PrincipalLookup = Callable[[str], Awaitable[Principal | None]]


class TokenVerifier:
    """The principal of a token, from `lookup`, each answer (None too) remembered for `ttl_seconds`.
    Concurrent first checks of one token share one lookup."""

    def __init__(
        self, lookup: PrincipalLookup, ttl_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.lookup = lookup
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self._answers: dict[str, tuple[float, Principal | None]] = {}
        self._pending: dict[str, asyncio.Future[Principal | None]] = {}

    async def verify(self, token: str) -> Principal | None:
        cached = self._answers.get(token)
        if cached is not None and cached[0] > self.clock():
            return cached[1]
        pending = self._pending.get(token)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Principal | None] = asyncio.get_running_loop().create_future()
        self._pending[token] = future
        try:
            principal = await self.lookup(token)
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: waiters re-raise it, nobody else needs to
            raise
        finally:
            del self._pending[token]
        self._remember(token, principal)
        future.set_result(principal)
        return principal

    def _remember(self, token: str, principal: Principal | None) -> None:
        now = self.clock()
        if len(self._answers) >= MAX_CACHED_TOKENS:  # bounded however many bad tokens callers try
            self._answers = {key: value for key, value in self._answers.items() if value[0] > now}
            if len(self._answers) >= MAX_CACHED_TOKENS:
                self._answers.clear()
        self._answers[token] = (now + self.ttl_seconds, principal)


def registry_lookup(http: httpx.AsyncClient) -> PrincipalLookup:
    """Ask the registry at `http`'s base URL who a token is (`GET /auth/whoami`)."""

    async def lookup(token: str) -> Principal | None:
        try:
            response = await http.get("/auth/whoami", headers={"Authorization": f"Bearer {token}"})
        except httpx.TransportError as error:
            raise AuthUnavailable(f"the registry at {http.base_url} did not answer: {error!r}") from error
        if response.status_code == 401:
            return None
        if response.status_code != 200:
            raise AuthUnavailable(f"the registry answered {response.status_code} to GET /auth/whoami")
        return Principal.model_validate(response.json())

    return lookup


class Refusal(Exception):
    """A request refused: 401 (no valid token), 403 (the role lacks a permission) or 503 (no answer)."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"} if self.status_code == 401 else {}


class Authenticator:
    """Turns a request's headers into its principal and checks its permission. Disabled (`verifier`
    None), every request is ANONYMOUS."""

    def __init__(self, verifier: TokenVerifier | None) -> None:
        self.verifier = verifier

    @property
    def enabled(self) -> bool:
        return self.verifier is not None

    async def authorize(
        self, authorization: str | None, workspace: str | None, permission: Permission | None
    ) -> Principal:
        """The principal, if it holds `permission` (None: any valid token); Refusal otherwise."""
        if self.verifier is None:
            return ANONYMOUS
        token = bearer_token(authorization)
        if token is None:
            raise Refusal(401, "this route needs a token: send `Authorization: Bearer <token>`")
        try:
            principal = await self.verifier.verify(token)
        except AuthUnavailable as error:
            raise Refusal(503, f"cannot check the token now: {error}") from error
        if principal is None:
            raise Refusal(401, "the token is not valid (unknown or revoked)")
        if permission is not None and not principal.can(permission):
            raise Refusal(403, f"role {principal.role} lacks permission {permission!s}")
        if workspace and principal.role is Role.SERVICE and principal.scope is None:
            try:
                return Principal(
                    user=principal.user, workspace=workspace, role=principal.role, token_id=principal.token_id
                )
            except ValueError as error:
                raise Refusal(400, f"{WORKSPACE_HEADER} is not a workspace name: {workspace!r}") from error
        return principal


def require(permission: Permission | None) -> Callable[[Request], Awaitable[Principal]]:
    """A FastAPI dependency: the request's principal when it holds `permission` (None: any valid token);
    401 with `WWW-Authenticate: Bearer` without a valid token, 403 naming the missing permission."""

    async def principal(request: Request) -> Principal:
        authenticator: Authenticator = request.app.state.authenticator
        authorization = request.headers.get("authorization")
        session = request.cookies.get(SESSION_COOKIE)
        if authorization is None and session and request.method in ("GET", "HEAD"):
            authorization = f"Bearer {session}"
        try:
            return await authenticator.authorize(
                authorization, request.headers.get(WORKSPACE_HEADER), permission
            )
        except Refusal as refusal:
            raise HTTPException(refusal.status_code, refusal.detail, headers=refusal.headers) from None

    return principal


def require_by_method(write: Permission) -> Callable[[Request], Awaitable[Principal]]:
    """A router's dependency: GET and HEAD need READ, every other method `write`."""
    reading, writing = require(Permission.READ), require(write)

    async def principal(request: Request) -> Principal:
        return await (reading if request.method in ("GET", "HEAD") else writing)(request)

    return principal


def guarded(
    router: APIRouter, write: Permission, then: Sequence[Callable[..., Awaitable[object]]] = ()
) -> APIRouter:
    """`router` with every route checked: GET and HEAD need READ, other methods `write`; `then`, more
    checks run after that one (a service's own, such as a model's workspace)."""
    outer = APIRouter(dependencies=[Depends(require_by_method(write)), *(Depends(check) for check in then)])
    outer.include_router(router)
    return outer


def service_token(settings: FlywheelSettings) -> str | None:
    """The token this service sends when it calls another (FLYWHEEL_SERVICE_TOKEN), if any."""
    return settings.service_token.get_secret_value() or None


async def authorize_scope(scope: Scope, permission: Permission) -> Principal:
    """The check of `require`, for raw ASGI routes (the hot routes): Refusal when refused."""
    return await authorize_headers(scope["app"].state.authenticator, scope["headers"], permission)


async def authorize_headers(
    authenticator: Authenticator, headers: Iterable[tuple[bytes, bytes]], permission: Permission
) -> Principal:
    """The check of `require` on a request's raw headers (lower-case names, as ASGI and uvicorn give them),
    for routes answered below FastAPI: Refusal when refused."""
    if not authenticator.enabled:
        return ANONYMOUS
    authorization = workspace = None
    for key, value in headers:
        if key == b"authorization":
            authorization = value.decode("latin-1")
        elif key == WORKSPACE_HEADER_BYTES:
            workspace = value.decode("latin-1")
    return await authenticator.authorize(authorization, workspace, permission)


def authorization_headers(token: str | None) -> dict[str, str]:
    """The header a client sends with `token` (none without one)."""
    return {"Authorization": f"Bearer {token}"} if token else {}
