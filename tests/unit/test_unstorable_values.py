"""A value the database cannot hold is the caller's mistake: a 422 saying which, in every service."""

from __future__ import annotations

import asyncpg
import httpx
from fastapi import APIRouter

from shared.service import create_service_app
from shared.settings import FlywheelSettings

router = APIRouter()


@router.post("/things")
async def store_a_thing() -> None:
    raise asyncpg.exceptions.CharacterNotInRepertoireError('invalid byte sequence for encoding "UTF8": 0x00')


@router.get("/things/{number}")
async def find_a_thing(number: int) -> None:
    raise asyncpg.DataError(f"invalid input for query argument $1: {number} (value out of int32 range)")


async def test_a_nul_character_or_an_out_of_range_number_is_a_422_naming_it() -> None:
    app = create_service_app("test", description="", settings=FlywheelSettings(), routers=[router])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        nul = await client.post("/things")
        huge = await client.get(f"/things/{2**40}")
    assert nul.status_code == 422
    assert nul.json() == {
        "detail": 'a value in the request cannot be stored: invalid byte sequence for encoding "UTF8": 0x00'
    }
    assert huge.status_code == 422
    assert "value out of int32 range" in huge.json()["detail"]
