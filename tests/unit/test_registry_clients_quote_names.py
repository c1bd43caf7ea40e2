"""The services' registry clients keep a caller's model name one path segment, whatever it holds."""

from __future__ import annotations

import httpx

from services.trainer.registry_client import RegistryClient as TrainerRegistryClient
from shared.model_versions import RegistryClient

AWKWARD_NAME = "credit/versions/1?\x16%"


def recording_transport(paths: list[str], status: int = 404) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.raw_path.decode())
        return httpx.Response(status, json={"detail": "no"})

    return httpx.MockTransport(answer)


async def test_serving_and_batch_client_quote_names_and_aliases() -> None:
    paths: list[str] = []
    client = RegistryClient("http://registry")
    client.http = httpx.AsyncClient(base_url="http://registry", transport=recording_transport(paths))
    assert await client.describe_version(AWKWARD_NAME, None, "a/b") is None
    assert await client.describe_version(AWKWARD_NAME, 3, None) is None
    await client.close()
    assert paths == [
        "/models/credit%2Fversions%2F1%3F%16%25/aliases/a%2Fb",
        "/models/credit%2Fversions%2F1%3F%16%25/versions/3",
    ]


async def test_a_version_the_registry_refuses_as_impossible_is_not_found() -> None:
    client = RegistryClient("http://registry")
    client.http = httpx.AsyncClient(base_url="http://registry", transport=recording_transport([], 422))
    assert await client.describe_version("credit", 2**40, None) is None
    await client.close()


async def test_trainer_client_quotes_model_names() -> None:
    paths: list[str] = []
    client = TrainerRegistryClient("http://registry")
    client.http = httpx.AsyncClient(base_url="http://registry", transport=recording_transport(paths))
    assert await client.version_by_alias(AWKWARD_NAME, "production") is None
    await client.close()
    assert paths == ["/models/credit%2Fversions%2F1%3F%16%25/aliases/production"]
