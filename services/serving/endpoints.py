"""Serving's routes: the Open Inference Protocol (KServe V2) and a v1 JSON form for people.

Inference routes read the raw body and answer with orjson: the protocol module validates against the
model's signature, so FastAPI's own body parsing and response validation would only add a second pass.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from services.serving.batching import BatcherStopped
from services.serving.metrics import REQUEST_ERRORS
from services.serving.models import ModelNotFound, ModelStore, ModelUnavailable
from services.serving.protocol import InvalidInput
from services.serving.registry_client import RegistryUnavailable
from services.serving.service import Answer, InferenceService
from shared.events import TensorSpec

REQUEST_ID_HEADER = "X-Request-Id"
VERSION_HEADER = "X-Model-Version"


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


class RequestTooLarge(ValueError):
    pass


async def inference(request: Request) -> InferenceService:
    service: InferenceService = request.app.state.inference
    return service


Inference = Annotated[InferenceService, Depends(inference)]
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


@router.get("/v2/models/{name}")
async def model_metadata(name: str, request: Request) -> ModelMetadata:
    """The served version's input/output signature (the one behind the default alias)."""
    models: ModelStore = request.app.state.models
    model = await models.resolve(name, alias=request.app.state.default_alias)
    return ModelMetadata(
        name=name,
        versions=[str(model.version)],
        platform="onnxruntime_onnx",
        inputs=[_tensor(spec) for spec in model.signature.inputs],
        outputs=[_tensor(spec) for spec in model.signature.outputs],
    )


@router.get("/v2/models/{name}/ready")
async def model_ready(name: str, request: Request) -> dict[str, Any]:
    """Whether the model's served version is loaded and answers (loading it if needed)."""
    models: ModelStore = request.app.state.models
    model = await models.resolve(name, alias=request.app.state.default_alias)
    return {"name": name, "version": str(model.version), "ready": True}


@router.post("/v2/models/{name}/infer", openapi_extra=V2_BODY)
async def infer(name: str, request: Request, service: Inference) -> Response:
    """Infer with the version behind the default alias (`production`)."""
    answer = await service.infer_v2(name, await _body(request), None, request.headers.get(REQUEST_ID_HEADER))
    return _respond(answer)


@router.post("/v2/models/{name}/versions/{version}/infer", openapi_extra=V2_BODY)
async def infer_version(name: str, version: int, request: Request, service: Inference) -> Response:
    """Infer with one explicit version."""
    answer = await service.infer_v2(
        name, await _body(request), version, request.headers.get(REQUEST_ID_HEADER)
    )
    return _respond(answer)


@router.post("/v1/models/{name}:predict", openapi_extra=V1_BODY)
async def predict(name: str, request: Request, service: Inference) -> Response:
    """`{"instances": [[...], ...]}` or `{"instances": [{"feature": value, ...}]}` in; labels and class
    probabilities out, with the version that answered."""
    answer = await service.predict_v1(name, await _body(request), request.headers.get(REQUEST_ID_HEADER))
    return _respond(answer)


def add_error_handlers(app: FastAPI) -> None:
    def handler(status: int) -> Any:
        async def respond(request: Request, error: Exception) -> Response:
            REQUEST_ERRORS.labels(request.path_params.get("name", ""), str(status)).inc()
            return Response(
                orjson.dumps({"error": str(error)}), status_code=status, media_type="application/json"
            )

        return respond

    app.add_exception_handler(ModelNotFound, handler(404))
    app.add_exception_handler(RequestTooLarge, handler(413))
    app.add_exception_handler(InvalidInput, handler(422))
    for unavailable in (ModelUnavailable, RegistryUnavailable, BatcherStopped):
        app.add_exception_handler(unavailable, handler(503))


async def _body(request: Request) -> bytes:
    limit: int = request.app.state.max_request_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(f"the body is {declared} bytes; the limit is {limit}")
    body = await request.body()
    if len(body) > limit:
        raise RequestTooLarge(f"the body is larger than the limit of {limit} bytes")
    return body


def _respond(answer: Answer) -> Response:
    return Response(
        orjson.dumps(answer.body),
        media_type="application/json",
        headers={VERSION_HEADER: str(answer.model.version), REQUEST_ID_HEADER: answer.request_id},
    )


def _tensor(spec: TensorSpec) -> TensorMetadata:
    return TensorMetadata(name=spec.name, datatype=spec.datatype, shape=spec.shape)
