"""The registry's access-control routes: admins issue, list and revoke tokens; any valid token can ask
who it is (the other services ask this to check the tokens they are sent, see shared.auth)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request

from services.registry.schemas import Problem, Token, TokenCreate, TokenCreated
from services.registry.tokens import TokenService
from shared.auth import ANONYMOUS, Authenticator, Permission, Principal, bearer_token, require
from shared.service import InvalidInput


async def tokens(request: Request) -> TokenService:
    service: TokenService = request.app.state.tokens
    return service


Tokens = Annotated[TokenService, Depends(tokens)]
Admin = Annotated[Principal, Depends(require(Permission.ADMIN))]

auth_router = APIRouter(
    prefix="/auth",
    tags=["access control"],
    responses={
        **{status: {"model": Problem} for status in (400, 401, 403, 404)},
        422: {"model": InvalidInput},
    },
)


@auth_router.post("/tokens", status_code=201)
async def create_token(body: TokenCreate, service: Tokens, principal: Admin) -> TokenCreated:
    """Issue a token for a user, workspace and role. The secret is in this answer only; the registry
    keeps its sha256."""
    return await service.create(body, created_by=principal.user)


@auth_router.get("/tokens")
async def list_tokens(service: Tokens, principal: Admin) -> list[Token]:
    """Every token, revoked ones too, without secrets."""
    return await service.list()


@auth_router.delete("/tokens/{token_id}")
async def revoke_token(token_id: str, service: Tokens, principal: Admin) -> Token:
    """Revoke a token: refused everywhere within FLYWHEEL_AUTH_CACHE_SECONDS."""
    return await service.revoke(token_id)


@auth_router.get("/whoami")
async def whoami(request: Request, service: Tokens) -> Principal:
    """The principal of the token sent: user, workspace, role and token id. Read from the table each time,
    not from the registry's cache: the services asking cache the answer themselves."""
    authenticator: Authenticator = request.app.state.authenticator
    if not authenticator.enabled:
        return ANONYMOUS
    token = bearer_token(request.headers.get("authorization"))
    principal = None if token is None else await service.principal_of(token)
    if principal is None:
        raise HTTPException(
            401, "the token is not valid (unknown or revoked)", {"WWW-Authenticate": "Bearer"}
        )
    return principal
