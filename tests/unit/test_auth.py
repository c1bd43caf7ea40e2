"""shared.auth: the role table, tokens, the cached token check and the FastAPI dependency."""

from __future__ import annotations

import asyncio
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI

from shared.auth import (
    ANONYMOUS,
    ROLE_PERMISSIONS,
    Authenticator,
    Permission,
    Principal,
    Refusal,
    Role,
    TokenVerifier,
    bearer_token,
    new_token,
    require,
    token_hash,
)

ALICE = Principal(user="alice", workspace="risk", role=Role.VIEWER, token_id="t1")


def test_roles_hold_the_permissions_of_the_design() -> None:
    assert ROLE_PERMISSIONS[Role.VIEWER] == {Permission.READ}
    assert ROLE_PERMISSIONS[Role.PREDICTOR] == {Permission.INFER}
    scientist = {Permission.READ, Permission.TRACK, Permission.REGISTER, Permission.TRAIN}
    assert ROLE_PERMISSIONS[Role.DATA_SCIENTIST] == scientist
    engineer = scientist | {
        Permission.PROMOTE_PRODUCTION,
        Permission.RETRAIN,
        Permission.BATCH,
        Permission.MONITOR,
        Permission.INFER,
    }
    assert ROLE_PERMISSIONS[Role.ML_ENGINEER] == engineer
    assert ROLE_PERMISSIONS[Role.ADMIN] == set(Permission)
    assert ROLE_PERMISSIONS[Role.SERVICE] == set(Permission) - {Permission.ADMIN}


def test_tokens_are_random_prefixed_and_stored_as_sha256() -> None:
    first, second = new_token(), new_token()
    assert first.startswith("fw_")
    assert len(first) == 3 + 43
    assert first != second
    assert len(token_hash(first)) == 64
    assert token_hash(first) != first


def test_bearer_token_reads_only_the_bearer_scheme() -> None:
    assert bearer_token("Bearer fw_abc") == "fw_abc"
    assert bearer_token("bearer  fw_abc ") == "fw_abc"
    assert bearer_token("Basic dXNlcg==") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token(None) is None


class Lookups:
    """A registry stand-in that counts the questions it is asked."""

    def __init__(self, known: dict[str, Principal]) -> None:
        self.known = known
        self.asked: list[str] = []

    async def __call__(self, token: str) -> Principal | None:
        self.asked.append(token)
        await asyncio.sleep(0.01)
        return self.known.get(token)


async def test_answers_yes_and_no_are_reused_until_the_ttl_passes() -> None:
    now = [0.0]
    lookups = Lookups({"good": ALICE})
    verifier = TokenVerifier(lookups, ttl_seconds=5, clock=lambda: now[0])
    assert await verifier.verify("good") == ALICE
    assert await verifier.verify("bad") is None
    now[0] = 4.9
    assert await verifier.verify("good") == ALICE
    assert await verifier.verify("bad") is None
    assert lookups.asked == ["good", "bad"]
    del lookups.known["good"]  # revoked
    now[0] = 5.1
    assert await verifier.verify("good") is None
    assert lookups.asked == ["good", "bad", "good"]


async def test_concurrent_first_checks_of_a_token_ask_once() -> None:
    lookups = Lookups({"good": ALICE})
    verifier = TokenVerifier(lookups, ttl_seconds=5)
    answers = await asyncio.gather(*(verifier.verify("good") for _ in range(20)))
    assert answers == [ALICE] * 20
    assert lookups.asked == ["good"]


async def test_authorize_refuses_missing_invalid_and_unpermitted() -> None:
    authenticator = Authenticator(TokenVerifier(Lookups({"good": ALICE}), ttl_seconds=5))
    assert await authenticator.authorize("Bearer good", None, Permission.READ) == ALICE
    with pytest.raises(Refusal) as missing:
        await authenticator.authorize(None, None, Permission.READ)
    assert missing.value.status_code == 401
    with pytest.raises(Refusal) as invalid:
        await authenticator.authorize("Bearer nope", None, Permission.READ)
    assert invalid.value.status_code == 401
    with pytest.raises(Refusal) as forbidden:
        await authenticator.authorize("Bearer good", None, Permission.TRACK)
    assert forbidden.value.status_code == 403
    assert "track" in forbidden.value.detail


async def test_a_service_token_acts_for_the_workspace_it_names() -> None:
    service = Principal(user="service", workspace="*", role=Role.SERVICE)
    authenticator = Authenticator(TokenVerifier(Lookups({"svc": service}), ttl_seconds=5))
    acting = await authenticator.authorize("Bearer svc", "risk", Permission.TRACK)
    assert acting.workspace == "risk"
    assert acting.scope == "risk"
    assert (await authenticator.authorize("Bearer svc", None, Permission.TRACK)).scope is None
    # Other roles stay in their own workspace whatever they send.
    engineer = Principal(user="bob", workspace="risk", role=Role.ML_ENGINEER)
    authenticator = Authenticator(TokenVerifier(Lookups({"bob": engineer}), ttl_seconds=5))
    assert (await authenticator.authorize("Bearer bob", "fraud", Permission.TRACK)).workspace == "risk"


def app_with(authenticator: Authenticator) -> FastAPI:
    app = FastAPI()
    app.state.authenticator = authenticator

    @app.post("/things")
    async def create(principal: Annotated[Principal, Depends(require(Permission.TRACK))]) -> dict[str, str]:
        return {"user": principal.user}

    return app


async def test_require_answers_401_with_the_bearer_challenge_and_403_naming_the_permission() -> None:
    engineer = Principal(user="bob", workspace="risk", role=Role.ML_ENGINEER)
    authenticator = Authenticator(TokenVerifier(Lookups({"bob": engineer, "alice": ALICE}), 5))
    transport = httpx.ASGITransport(app=app_with(authenticator))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        missing = await client.post("/things")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        refused = await client.post("/things", headers={"Authorization": "Bearer alice"})
        assert refused.status_code == 403
        assert "track" in refused.json()["detail"]
        allowed = await client.post("/things", headers={"Authorization": "Bearer bob"})
        assert allowed.status_code == 200
        assert allowed.json() == {"user": "bob"}


async def test_with_access_control_off_every_request_is_the_anonymous_admin() -> None:
    transport = httpx.ASGITransport(app=app_with(Authenticator(None)))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answer = await client.post("/things")
    assert answer.status_code == 200
    assert answer.json() == {"user": "anonymous"}
    assert ANONYMOUS.role is Role.ADMIN
    assert ANONYMOUS.workspace == "default"
