"""The registry's OpenAPI document lists every route with its request and response models."""

from __future__ import annotations

from typing import Any

import pytest

from services.registry.app import create_app
from shared.settings import FlywheelSettings

NO_BODY_STATUSES = {"204"}
STREAMED = {("get", "/runs/{run_id}/artifacts/{path}")}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return create_app(FlywheelSettings()).openapi()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


def test_every_route_is_documented_with_a_description(document: dict[str, Any]) -> None:
    undocumented = [f"{m.upper()} {p}" for m, p, op in operations(document) if not op.get("description")]
    assert undocumented == []


def test_every_success_response_names_its_model(document: dict[str, Any]) -> None:
    missing = []
    for method, path, operation in operations(document):
        status, response = next((s, r) for s, r in operation["responses"].items() if s.startswith("2"))
        if status in NO_BODY_STATUSES or (method, path) in STREAMED or path == "/metrics":
            continue
        schema = response.get("content", {}).get("application/json", {}).get("schema", {})
        if not schema or schema == {}:
            missing.append(f"{method.upper()} {path}")
    assert missing == []


def test_every_registry_route_documents_its_errors_as_problems(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        if path.startswith(("/experiments", "/runs", "/models")):
            assert operation["responses"]["404"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Problem"
            }, f"{method} {path}"


def test_the_model_upload_documents_both_body_forms(document: dict[str, Any]) -> None:
    body = document["paths"]["/models/{name}/versions"]["post"]["requestBody"]["content"]
    assert set(body) == {"multipart/form-data", "application/octet-stream"}
    assert body["multipart/form-data"]["schema"]["required"] == ["model"]


def test_the_documented_routes_cover_tracking_and_registry(document: dict[str, Any]) -> None:
    routes = {f"{method.upper()} {path}" for method, path, _ in operations(document)}
    assert {
        "POST /experiments",
        "POST /runs",
        "POST /runs/{run_id}/log-batch",
        "POST /runs/search",
        "GET /runs/compare",
        "PUT /runs/{run_id}/artifacts/{path}",
        "POST /models/{name}/versions",
        "PUT /models/{name}/aliases/{alias}",
        "GET /models/{name}/versions/{version}/lineage",
        "GET /models/{name}/audit",
    } <= routes
