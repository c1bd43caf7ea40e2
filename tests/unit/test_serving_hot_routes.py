"""The lean inference routes: which paths they take from FastAPI, and their hand-written OpenAPI."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.serving.app import create_app
from services.serving.hot_routes import V1_PREDICT, V2_INFER, V2_VERSION_INFER, match_inference_route
from services.serving.settings import ServingSettings
from shared.http_protocol import FAST_ROUTES
from shared.settings import FlywheelSettings


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v2/models/credit/infer", (V2_INFER, "credit", None)),
        ("/v2/models/credit-risk.v2_x/infer", (V2_INFER, "credit-risk.v2_x", None)),
        ("/v2/models/credit/versions/12/infer", (V2_VERSION_INFER, "credit", "12")),
        ("/v2/models/credit/versions/x/infer", (V2_VERSION_INFER, "credit", "x")),  # answered 422
        ("/v1/models/credit:predict", (V1_PREDICT, "credit", None)),
        ("/v2/models//infer", None),
        ("/v2/models/credit/versions/1/extra/infer", None),
        ("/v2/models/a/b/infer", None),
        ("/v2/models/credit", None),
        ("/v2/models/credit/ready", None),
        ("/v1/models/:predict", None),
        ("/v1/models/a/b:predict", None),
        ("/metrics", None),
    ],
)
def test_only_the_inference_paths_are_taken(path: str, expected: tuple[str, str, str | None] | None) -> None:
    assert match_inference_route(path) == expected


def test_the_openapi_document_describes_the_hot_routes() -> None:
    document = create_app().openapi()
    for path in (V2_INFER, V2_VERSION_INFER, V1_PREDICT):
        operation = document["paths"][path]["post"]
        assert operation["requestBody"]["required"] is True
        assert set(operation["responses"]) == {"200", "404", "413", "422", "503"}
        assert "X-Model-Version" in operation["responses"]["200"]["headers"]
    assert document["components"]["schemas"]["Problem"]["required"] == ["error"]
    assert "/v2/models/{name}/ready" in document["paths"]


def test_a_version_that_is_not_a_number_is_a_422_naming_it(tmp_path: Path) -> None:
    settings = FlywheelSettings(data_dir=tmp_path, kafka_bootstrap=None, s3_endpoint=None, database_url=None)
    with TestClient(create_app(settings)) as client:
        answer = client.post("/v2/models/credit/versions/1.5/infer", json={"inputs": []})
    assert answer.status_code == 422
    assert answer.json() == {"error": "the version must be a whole number, not '1.5'"}


@pytest.mark.parametrize("fast_lane", [True, False])
def test_the_lifespan_gives_the_protocol_the_inference_routes_unless_the_lane_is_off(
    tmp_path: Path, fast_lane: bool
) -> None:
    settings = FlywheelSettings(data_dir=tmp_path, kafka_bootstrap=None, s3_endpoint=None, database_url=None)
    app = create_app(settings, ServingSettings(fast_lane=fast_lane))
    with TestClient(app) as client:
        given = client.app_state.get(FAST_ROUTES)
        assert given is (app.state.inference_routes if fast_lane else None)
        # Through ASGI (as under any other server, or with the lane off) the same routes answer.
        answer = client.post("/v2/models/credit/versions/x/infer", json={"inputs": []})
    assert (answer.status_code, answer.json()) == (
        422,
        {"error": "the version must be a whole number, not 'x'"},
    )
