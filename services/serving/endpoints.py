"""Serving's FastAPI routes: Open Inference Protocol (KServe V2) health and model metadata.

The inference routes themselves are answered by `hot_routes` before FastAPI sees them; their request
bodies are described here and their OpenAPI added to the app's document by `document_hot_routes`.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from services.serving.hot_routes import ERROR_STATUS, openapi_paths
from services.serving.metrics import REQUEST_ERRORS
from services.serving.models import ModelStore
from services.serving.service import check_workspace
from shared.auth import Permission, Principal, require
from shared.events import TensorSpec
from shared.telemetry import redact


class Problem(BaseModel):
    error: str


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


V2_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "inputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name", "shape", "datatype", "data"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "shape": {"type": "array", "items": {"type": "integer"}},
                                    "datatype": {"type": "string"},
                                    "data": {"type": "array", "items": {}},
                                },
                            },
                        },
                        "outputs": {
                            "type": "array",
                            "items": {"type": "object", "properties": {"name": {"type": "string"}}},
                        },
                    },
                }
            }
        },
    }
}
V1_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["instances"],
                    "properties": {
                        "instances": {
                            "type": "array",
                            "items": {},
                            "description": "each a list of feature values in the model's input order, "
                            "or an object of named features",
                        }
                    },
                }
            }
        },
    }
}
ERRORS: dict[int | str, dict[str, Any]] = {status: {"model": Problem} for status in (404, 413, 422, 503)}

router = APIRouter(tags=["inference"], responses=ERRORS)


@router.get("/v2/health/live")
async def v2_live() -> dict[str, bool]:
    """Open Inference Protocol liveness."""
    return {"live": True}


@router.get("/v2/health/ready")
async def v2_ready(request: Request) -> Response:
    """Open Inference Protocol readiness: the bus, artifact store and registry answer."""
    checks = await request.app.state.runtime.readiness()
    ready = all(checks.values())
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503)


# Model metadata and readiness are part of inference: they need INFER (the health routes stay open).
Inferrer = Annotated[Principal, Depends(require(Permission.INFER))]


@router.get("/v2/models/{name}")
async def model_metadata(name: str, request: Request, principal: Inferrer) -> ModelMetadata:
    """The served version's input/output signature (the one behind the default alias)."""
    models: ModelStore = request.app.state.models
    model = await models.resolve(name, alias=request.app.state.default_alias)
    check_workspace(model, principal.scope)
    return ModelMetadata(
        name=name,
        versions=[str(model.version)],
        platform="onnxruntime_onnx",
        inputs=[_tensor(spec) for spec in model.signature.inputs],
        outputs=[_tensor(spec) for spec in model.signature.outputs],
    )


@router.get("/v2/models/{name}/ready")
async def model_ready(name: str, request: Request, principal: Inferrer) -> dict[str, Any]:
    """Whether the model's served version is loaded and answers (loading it if needed)."""
    models: ModelStore = request.app.state.models
    model = await models.resolve(name, alias=request.app.state.default_alias)
    check_workspace(model, principal.scope)
    return {"name": name, "version": str(model.version), "ready": True}


def add_error_handlers(app: FastAPI) -> None:
    """The same statuses and `{"error": ...}` bodies on FastAPI's routes as on the hot routes."""

    def handler(status: int) -> Any:
        async def respond(request: Request, error: Exception) -> Response:
            REQUEST_ERRORS.labels(request.path_params.get("name", ""), str(status)).inc()
            return Response(
                orjson.dumps({"error": redact(str(error))}), status_code=status, media_type="application/json"
            )

        return respond

    for error, status in ERROR_STATUS.items():
        app.add_exception_handler(error, handler(status))


def document_hot_routes(app: FastAPI) -> None:
    """Add the hot inference routes, which FastAPI never sees, to the app's OpenAPI document."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            schema["paths"].update(openapi_paths(V2_BODY, V1_BODY))
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _tensor(spec: TensorSpec) -> TensorMetadata:
    return TensorMetadata(name=spec.name, datatype=spec.datatype, shape=spec.shape)
