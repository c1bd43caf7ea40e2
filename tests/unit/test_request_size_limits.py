"""Every service refuses a request body over its limit with a 413 naming it; uploads have larger limits."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from fastapi import APIRouter, Request
from pydantic import BaseModel

from shared.service import create_service_app
from shared.settings import FlywheelSettings

router = APIRouter()


class Note(BaseModel):
    text: str


@router.post("/notes")
async def create_note(note: Note) -> int:
    return len(note.text)


@router.post("/files/{name}")
async def upload_file(name: str, request: Request) -> int:
    return sum([len(chunk) async for chunk in request.stream()])


def client() -> httpx.AsyncClient:
    app = create_service_app(
        "test",
        description="",
        settings=FlywheelSettings(max_body_bytes=1000),
        routers=[router],
        upload_limits={"/files/{name}": 5000},
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def chunks(total: int) -> AsyncIterator[bytes]:
    for _ in range(total // 100):
        yield b"x" * 100


async def test_a_json_body_within_the_limit_is_taken() -> None:
    async with client() as http:
        answer = await http.post("/notes", json={"text": "x" * 900})
    assert answer.status_code == 200
    assert answer.json() == 900


async def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    async with client() as http:
        answer = await http.post("/notes", json={"text": "x" * 2000})
    assert answer.status_code == 413
    assert answer.json() == {
        "detail": "the body is 2011 bytes, more than the limit of 1000 bytes for this route"
    }


async def test_a_streamed_body_is_refused_once_it_passes_the_limit() -> None:
    async with client() as http:
        answer = await http.post("/notes", content=chunks(3000), headers={"content-type": "application/json"})
    assert answer.status_code == 413
    assert answer.json() == {"detail": "the body is more than the limit of 1000 bytes for this route"}


async def test_an_upload_route_has_its_own_larger_limit() -> None:
    async with client() as http:
        taken = await http.post("/files/a", content=chunks(4000))
        refused = await http.post("/files/a", content=chunks(6000))
        declared = await http.post("/files/a", content=b"x" * 6000)
    assert taken.status_code == 200
    assert taken.json() == 4000
    assert refused.status_code == 413
    assert declared.status_code == 413
    assert "5000 bytes" in declared.json()["detail"]
