"""API tokens: issued, listed and revoked by admins; the registry answers for them (`/auth/whoami`), to
itself directly and to the other services over HTTP (shared.auth)."""

from __future__ import annotations

import logging
import uuid

import asyncpg

from services.registry import token_repository as repository
from services.registry.errors import InvalidRequest, NotFound
from services.registry.schemas import Token, TokenCreate, TokenCreated
from shared.auth import ALL_WORKSPACES, Principal, Role, new_token, token_hash
from shared.settings import FlywheelSettings

log = logging.getLogger(__name__)

# The id of the token taken from FLYWHEEL_SERVICE_TOKEN: one row, replaced when the setting changes.
CONFIGURED_SERVICE_TOKEN_ID = "service"


class TokenService:
    def __init__(self, database: asyncpg.Pool) -> None:
        self.database = database

    async def create(self, request: TokenCreate, created_by: str) -> TokenCreated:
        """A new token; its secret is in this answer only."""
        if (request.workspace == ALL_WORKSPACES) != (request.role is Role.SERVICE):
            raise InvalidRequest("workspace '*' (every workspace) is for the service role, and only it")
        secret = new_token()
        principal = Principal(user=request.user, workspace=request.workspace, role=request.role)
        async with self.database.acquire() as connection:
            token = await repository.insert_token(
                connection, uuid.uuid4().hex, token_hash(secret), principal, created_by
            )
        return TokenCreated(**token.model_dump(), token=secret)

    async def list(self) -> list[Token]:
        async with self.database.acquire() as connection:
            return await repository.list_tokens(connection)

    async def revoke(self, token_id: str) -> Token:
        async with self.database.acquire() as connection:
            token = await repository.revoke_token(connection, token_id)
        if token is None:
            raise NotFound(f"no token with id {token_id!r}")
        return token

    async def principal_of(self, token: str) -> Principal | None:
        """The principal of a valid token; None for an unknown or revoked one."""
        async with self.database.acquire() as connection:
            return await repository.principal_of(connection, token_hash(token))

    async def take_configured_tokens(self, settings: FlywheelSettings) -> None:
        """At start: with no token at all yet, FLYWHEEL_ADMIN_TOKEN becomes the first admin's token; and
        FLYWHEEL_SERVICE_TOKEN is the services' token (for every workspace), whatever it was before."""
        admin = settings.admin_token.get_secret_value()
        service = settings.service_token.get_secret_value()
        async with self.database.acquire() as connection, connection.transaction():
            # Replicas starting together: one takes the lock, the others then see its token.
            await connection.execute("LOCK TABLE tokens IN SHARE ROW EXCLUSIVE MODE")
            if admin and not await repository.any_token(connection):
                first = Principal(user="admin", workspace="default", role=Role.ADMIN)
                await repository.insert_token(connection, uuid.uuid4().hex, token_hash(admin), first, "setup")
                log.info("first admin token taken from FLYWHEEL_ADMIN_TOKEN")
            if service:
                services = Principal(user="service", workspace=ALL_WORKSPACES, role=Role.SERVICE)
                await repository.replace_token(
                    connection, CONFIGURED_SERVICE_TOKEN_ID, token_hash(service), services, "setup"
                )
