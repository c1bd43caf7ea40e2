"""The registry's routes: parse, call the service, map errors to HTTP."""

from __future__ import annotations

import json
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel
from starlette.datastructures import UploadFile

from services.registry.errors import InvalidRequest, PayloadTooLarge, RegistryError, UnsupportedMediaType
from services.registry.model_registry import ModelRegistry, VersionDetails
from services.registry.schemas import (
    AliasMove,
    AliasUpdate,
    Artifact,
    AuditPage,
    Experiment,
    ExperimentCreate,
    ExperimentPage,
    ExperimentUpdate,
    Key,
    Lineage,
    LogBatch,
    MetricHistory,
    ModelName,
    ModelVersion,
    ModelVersionPage,
    Problem,
    RegisteredModel,
    RegisteredModelCreate,
    RegisteredModelPage,
    RegisteredModelUpdate,
    Run,
    RunComparison,
    RunCreate,
    RunPage,
    RunSearch,
    RunUpdate,
    TagUpdate,
)
from services.registry.search import FilterSyntaxError
from services.registry.tracking import TrackingService
from shared.auth import Permission, Principal, Role, require
from shared.events import AliasName, TrafficPolicy
from shared.pagination import InvalidPageToken
from shared.service import InvalidInput

ERRORS: dict[int | str, dict[str, Any]] = {
    **{status: {"model": Problem} for status in (400, 404, 409, 413, 415)},
    422: {"model": InvalidInput},
}
UPLOAD_CHUNK_BYTES = 1024 * 1024


# async: a plain `def` dependency would run in a worker thread, costing a thread hop per request.
async def tracking(request: Request) -> TrackingService:
    service: TrackingService = request.app.state.tracking
    return service


async def registry(request: Request) -> ModelRegistry:
    service: ModelRegistry = request.app.state.registry
    return service


Tracking = Annotated[TrackingService, Depends(tracking)]
Registry = Annotated[ModelRegistry, Depends(registry)]
# Who the caller is, holding the permission a route needs (shared.auth): reads need READ; experiments and
# runs TRACK; models, versions, tags and aliases REGISTER (the `production` alias PROMOTE_PRODUCTION).
Reader = Annotated[Principal, Depends(require(Permission.READ))]
Tracker = Annotated[Principal, Depends(require(Permission.TRACK))]
Registrar = Annotated[Principal, Depends(require(Permission.REGISTER))]
Promoter = Annotated[Principal, Depends(require(Permission.PROMOTE_PRODUCTION))]
# Whom a service (or, with access control off, anyone) says it acts for, for the audit trail.
ClaimedActor = Annotated[str | None, Header(alias="X-Flywheel-Actor", max_length=256)]
PRODUCTION_ALIAS = "production"


def actor_of(principal: Principal, claimed: str | None) -> str:
    """Who the audit trail names: the token's user. A service names whom it acts for (the trainer, a
    run), and so does any caller while access control is off (no token)."""
    if principal.token_id is None or principal.role is Role.SERVICE:
        return claimed or principal.user
    return principal.user


def check_alias_permission(principal: Principal, alias: str) -> None:
    """Moving or removing the `production` alias is a promotion: it needs PROMOTE_PRODUCTION."""
    if alias == PRODUCTION_ALIAS and not principal.can(Permission.PROMOTE_PRODUCTION):
        raise HTTPException(
            403,
            f"role {principal.role} lacks permission {Permission.PROMOTE_PRODUCTION!s} (alias 'production')",
        )


PageSize = Annotated[int, Query(ge=1, le=1000)]

tracking_router = APIRouter(tags=["tracking"], responses=ERRORS)
registry_router = APIRouter(tags=["model registry"], responses=ERRORS)


# ---------------------------------------------------------------- runs
# First, and the busiest first: FastAPI tries routes in order (each try costs a few microseconds).


@tracking_router.post("/runs", status_code=201, response_model=Run)
async def create_run(body: RunCreate, service: Tracking, principal: Tracker) -> Response:
    """Start a run in an experiment given by id or by name (created when missing)."""
    return _json(await service.create_run(body, principal), status_code=201)


@tracking_router.post("/runs/{run_id}/log-batch", status_code=204)
async def log_batch(run_id: str, body: LogBatch, service: Tracking, principal: Tracker) -> None:
    """Log params, metric points and tags in one call: all stored, or none (409 for a param that was
    logged before with another value)."""
    await service.log_batch(run_id, body, principal)


@tracking_router.patch("/runs/{run_id}", response_model=Run)
async def update_run(run_id: str, body: RunUpdate, service: Tracking, principal: Tracker) -> Response:
    """Rename a run or end it (finished, failed, killed)."""
    return _json(await service.update_run(run_id, body, principal))


@tracking_router.post("/runs/search", response_model=RunPage)
async def search_runs(body: RunSearch, service: Tracking, principal: Reader) -> Response:
    """Runs across experiments matching a filter such as
    `metrics.auc > 0.8 and params.model = 'rf' and tags.team = 'risk'`, ordered and paginated.
    A malformed filter is a 400 with the position and token of the mistake."""
    return _json(await service.search_runs(body, principal))


@tracking_router.get("/runs/compare")
async def compare_runs(
    service: Tracking, principal: Reader, run_id: Annotated[list[str], Query()]
) -> RunComparison:
    """Runs side by side (`?run_id=a&run_id=b`): their params, last metric values, and which params differ."""
    return await service.compare_runs(run_id, principal)


@tracking_router.get("/runs/{run_id}")
async def get_run(run_id: str, service: Tracking, principal: Reader) -> Run:
    """A run with its params, tags and the last value of each metric."""
    return await service.get_run(run_id, principal)


@tracking_router.delete("/runs/{run_id}", status_code=204)
async def delete_run(run_id: str, service: Tracking, principal: Tracker) -> None:
    """Delete a run with its params, metrics and artifact records."""
    await service.delete_run(run_id, principal)


@tracking_router.get("/runs/{run_id}/metrics/{key}")
async def metric_history(run_id: str, key: Key, service: Tracking, principal: Reader) -> MetricHistory:
    """Every logged point of one metric, by step."""
    return await service.metric_history(run_id, key, principal)


@tracking_router.put(
    "/runs/{run_id}/artifacts/{path:path}",
    status_code=201,
    openapi_extra={
        "requestBody": {
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
        }
    },
)
async def upload_artifact(
    run_id: str, path: str, request: Request, service: Tracking, principal: Tracker
) -> Artifact:
    """Store the request body (streamed) as the run's artifact at `path`."""
    content_type = request.headers.get("content-type", "application/octet-stream")
    return await service.upload_artifact(run_id, path, request.stream(), content_type, principal)


@tracking_router.get("/runs/{run_id}/artifacts")
async def list_artifacts(run_id: str, service: Tracking, principal: Reader) -> list[Artifact]:
    """The run's artifacts with their sizes and sha256."""
    return await service.list_artifacts(run_id, principal)


@tracking_router.get("/runs/{run_id}/artifacts/{path:path}", response_class=StreamingResponse)
async def download_artifact(
    run_id: str, path: str, service: Tracking, principal: Reader
) -> StreamingResponse:
    """The artifact's bytes, streamed."""
    artifact, content = await service.open_artifact(run_id, path, principal)
    return StreamingResponse(
        content, media_type=artifact.content_type, headers={"X-Flywheel-Sha256": artifact.sha256}
    )


# ---------------------------------------------------------------- experiments


@tracking_router.post("/experiments", status_code=201)
async def create_experiment(body: ExperimentCreate, service: Tracking, principal: Tracker) -> Experiment:
    """Create an experiment; 409 when the name is taken."""
    return await service.create_experiment(body, principal)


@tracking_router.get("/experiments")
async def list_experiments(
    service: Tracking, principal: Reader, page_size: PageSize = 100, page_token: str | None = None
) -> ExperimentPage:
    """Experiments, newest first."""
    return await service.list_experiments(page_size, page_token, principal)


@tracking_router.get("/experiments/by-name/{name}")
async def get_experiment_by_name(name: str, service: Tracking, principal: Reader) -> Experiment:
    """One experiment, by its unique name."""
    return await service.get_experiment_by_name(name, principal)


@tracking_router.get("/experiments/{experiment_id}")
async def get_experiment(experiment_id: str, service: Tracking, principal: Reader) -> Experiment:
    """One experiment, by id."""
    return await service.get_experiment(experiment_id, principal)


@tracking_router.patch("/experiments/{experiment_id}")
async def update_experiment(
    experiment_id: str, body: ExperimentUpdate, service: Tracking, principal: Tracker
) -> Experiment:
    """Change the description and set tags."""
    return await service.update_experiment(experiment_id, body, principal)


@tracking_router.delete("/experiments/{experiment_id}", status_code=204)
async def delete_experiment(experiment_id: str, service: Tracking, principal: Tracker) -> None:
    """Delete the experiment and its runs."""
    await service.delete_experiment(experiment_id, principal)


# ---------------------------------------------------------------- registered models


@registry_router.post("/models", status_code=201)
async def create_model(
    body: RegisteredModelCreate, service: Registry, principal: Registrar, actor: ClaimedActor = None
) -> RegisteredModel:
    """Register a model name; 409 when it exists."""
    return await service.create_model(body, actor_of(principal, actor), principal)


@registry_router.get("/models")
async def list_models(
    service: Registry, principal: Reader, page_size: PageSize = 100, page_token: str | None = None
) -> RegisteredModelPage:
    """Registered models by name, with their latest version and aliases."""
    return await service.list_models(page_size, page_token, principal)


@registry_router.get("/models/{name}")
async def get_model(name: str, service: Registry, principal: Reader) -> RegisteredModel:
    """One registered model."""
    return await service.get_model(name, principal)


@registry_router.patch("/models/{name}")
async def update_model(
    name: str,
    body: RegisteredModelUpdate,
    service: Registry,
    principal: Registrar,
    actor: ClaimedActor = None,
) -> RegisteredModel:
    """Change the model's description."""
    return await service.update_model(name, body.description, actor_of(principal, actor), principal)


@registry_router.delete("/models/{name}", status_code=204)
async def delete_model(
    name: str, service: Registry, principal: Registrar, actor: ClaimedActor = None
) -> None:
    """Delete the model with its versions and aliases; the audit trail stays readable."""
    await service.delete_model(name, actor_of(principal, actor), principal)


@registry_router.put("/models/{name}/tags/{key}")
async def set_model_tag(
    name: str, key: Key, body: TagUpdate, service: Registry, principal: Registrar, actor: ClaimedActor = None
) -> RegisteredModel:
    """Set one tag of the model."""
    return await service.set_model_tag(name, key, body.value, actor_of(principal, actor), principal)


@registry_router.delete("/models/{name}/tags/{key}")
async def delete_model_tag(
    name: str, key: Key, service: Registry, principal: Registrar, actor: ClaimedActor = None
) -> RegisteredModel:
    """Remove one tag of the model."""
    return await service.set_model_tag(name, key, None, actor_of(principal, actor), principal)


# ---------------------------------------------------------------- versions


@registry_router.post(
    "/models/{name}/versions",
    status_code=201,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["model"],
                        "properties": {
                            "model": {"type": "string", "format": "binary", "description": "the ONNX file"},
                            "description": {"type": "string"},
                            "source_run_id": {"type": "string"},
                            "reference_profile_uri": {"type": "string"},
                            "tags": {"type": "string", "description": "JSON object of string tags"},
                            "sample": {
                                "type": "string",
                                "description": "JSON: input name -> rows, for the smoke inference",
                            },
                        },
                    }
                },
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    },
)
async def submit_version(
    name: ModelName,
    request: Request,
    service: Registry,
    principal: Registrar,
    actor: ClaimedActor = None,
    description: str = "",
    source_run_id: str | None = None,
    reference_profile_uri: str | None = None,
) -> ModelVersion:
    """Upload an ONNX model as the model's next version (the model is created on first upload): as
    multipart/form-data (file field `model`) or as an application/octet-stream body with the details in
    the query. The file must load in onnxruntime and answer a smoke inference; otherwise a 400 says why
    and nothing is stored. Never unpickled."""
    limit: int = request.app.state.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the upload is {declared} bytes; the limit is {limit}")
    content_type = request.headers.get("content-type", "")
    details = VersionDetails(
        description=description, source_run_id=source_run_id, reference_profile_uri=reference_profile_uri
    )
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=10)
        file = form.get("model")
        if not isinstance(file, UploadFile):
            raise InvalidRequest("multipart field 'model' (the ONNX file) is missing")
        chunks = _chunks_of(file)
        details = VersionDetails(
            description=str(form.get("description", description)),
            source_run_id=_text_field(form.get("source_run_id")) or source_run_id,
            reference_profile_uri=_text_field(form.get("reference_profile_uri")) or reference_profile_uri,
            tags=_json_field(form.get("tags"), "tags") or {},
            sample=_json_field(form.get("sample"), "sample"),
        )
    elif content_type.split(";")[0].strip() in ("application/octet-stream", "application/onnx", ""):
        chunks = request.stream()
    else:
        raise UnsupportedMediaType(
            f"send the model as multipart/form-data or application/octet-stream, not {content_type!r}"
        )
    async with _spooled(chunks, limit) as model:
        return await service.submit_version(name, model, details, actor_of(principal, actor), principal)


@registry_router.get("/models/{name}/versions")
async def list_versions(
    name: str, service: Registry, principal: Reader, page_size: PageSize = 100, page_token: str | None = None
) -> ModelVersionPage:
    """The model's versions, newest first."""
    return await service.list_versions(name, page_size, page_token, principal)


@registry_router.get("/models/{name}/versions/{version}")
async def get_version(name: str, version: int, service: Registry, principal: Reader) -> ModelVersion:
    """One version by number."""
    return await service.get_version(name, version, principal)


@registry_router.delete("/models/{name}/versions/{version}", status_code=204)
async def delete_version(
    name: str, version: int, service: Registry, principal: Registrar, actor: ClaimedActor = None
) -> None:
    """Delete a version that no alias points at (409 otherwise)."""
    await service.delete_version(name, version, actor_of(principal, actor), principal)


@registry_router.put("/models/{name}/versions/{version}/tags/{key}")
async def set_version_tag(
    name: str,
    version: int,
    key: Key,
    body: TagUpdate,
    service: Registry,
    principal: Registrar,
    actor: ClaimedActor = None,
) -> ModelVersion:
    """Set one tag of a version."""
    return await service.set_version_tag(
        name, version, key, body.value, actor_of(principal, actor), principal
    )


@registry_router.delete("/models/{name}/versions/{version}/tags/{key}")
async def delete_version_tag(
    name: str, version: int, key: Key, service: Registry, principal: Registrar, actor: ClaimedActor = None
) -> ModelVersion:
    """Remove one tag of a version."""
    return await service.set_version_tag(name, version, key, None, actor_of(principal, actor), principal)


@registry_router.get("/models/{name}/versions/{version}/lineage")
async def lineage(name: str, version: int, service: Registry, principal: Reader) -> Lineage:
    """From the version to its run: params, metrics, dataset fingerprint and code version."""
    return await service.lineage(name, version, principal)


# ---------------------------------------------------------------- aliases and audit


@registry_router.put("/models/{name}/aliases/{alias}")
async def set_alias(
    name: str,
    alias: AliasName,
    body: AliasUpdate,
    service: Registry,
    principal: Registrar,
    actor: ClaimedActor = None,
) -> AliasMove:
    """Point an alias (production, staging, canary, any name) at a version; emits model-promoted."""
    check_alias_permission(principal, alias)
    return await service.set_alias(name, alias, body.version, actor_of(principal, actor), principal)


@registry_router.get("/models/{name}/aliases/{alias}")
async def get_version_by_alias(name: str, alias: str, service: Registry, principal: Reader) -> ModelVersion:
    """The version an alias points at."""
    return await service.get_version_by_alias(name, alias, principal)


@registry_router.delete("/models/{name}/aliases/{alias}", status_code=204)
async def delete_alias(
    name: str, alias: str, service: Registry, principal: Registrar, actor: ClaimedActor = None
) -> None:
    """Remove an alias (409 while the traffic policy routes to it)."""
    check_alias_permission(principal, alias)
    await service.delete_alias(name, alias, actor_of(principal, actor), principal)


@registry_router.get("/models/{name}/traffic-policy")
async def get_traffic_policy(name: str, service: Registry, principal: Reader) -> TrafficPolicy:
    """How serving splits the model's requests between aliases and which aliases shadow them (404 when
    the model has none: serving then answers every request from its default alias)."""
    return await service.get_traffic_policy(name, principal)


@registry_router.put("/models/{name}/traffic-policy")
async def set_traffic_policy(
    name: str, policy: TrafficPolicy, service: Registry, principal: Promoter, actor: ClaimedActor = None
) -> TrafficPolicy:
    """Split requests between aliases by percentage (`{"split": {"production": 90, "canary": 10}}`) and
    mirror them to shadows (`"shadow": ["staging"]`); every alias must exist. Emits traffic-policy-changed,
    which every serving replica applies to its next request."""
    await service.set_traffic_policy(name, policy, actor_of(principal, actor), principal)
    return policy


@registry_router.delete("/models/{name}/traffic-policy", status_code=204)
async def delete_traffic_policy(
    name: str, service: Registry, principal: Promoter, actor: ClaimedActor = None
) -> None:
    """Remove the policy: serving goes back to answering every request from its default alias."""
    await service.set_traffic_policy(name, None, actor_of(principal, actor), principal)


@registry_router.get("/models/{name}/audit")
async def audit(
    name: str, service: Registry, principal: Reader, page_size: PageSize = 100, page_token: str | None = None
) -> AuditPage:
    """Who created, changed, moved or deleted what, and when, with before and after; oldest first."""
    return await service.audit(name, page_size, page_token, principal)


# ---------------------------------------------------------------- errors


# Failures a caller can act on, answered with a Problem by `problem_answer`.
ANSWERED_ERRORS = (RegistryError, FilterSyntaxError, InvalidPageToken)


def problem_answer(error: Exception) -> JSONResponse:
    """The answer to one of ANSWERED_ERRORS: its status, and a Problem saying what was wrong (for a bad
    filter, where)."""
    if isinstance(error, FilterSyntaxError):
        problem = Problem(detail=f"invalid filter: {error}", position=error.position, token=error.token)
        return JSONResponse(problem.model_dump(exclude_none=True), status_code=400)
    if isinstance(error, InvalidPageToken):
        return JSONResponse(Problem(detail=str(error)).model_dump(), status_code=400)
    assert isinstance(error, RegistryError)
    return JSONResponse(
        Problem(detail=str(error)).model_dump(exclude_none=True), status_code=error.status_code
    )


def add_error_handlers(app: FastAPI) -> None:
    async def answer_problem(request: Request, error: Exception) -> Response:
        return problem_answer(error)

    for error in ANSWERED_ERRORS:
        app.add_exception_handler(error, answer_problem)


# ---------------------------------------------------------------- response and upload helpers


def _json(body: BaseModel, status_code: int = 200) -> Response:
    """The model as JSON, skipping FastAPI's second validation of a response the service built typed
    (on the busiest tracking routes that pass costs more than the database work)."""
    return Response(body.model_dump_json(), status_code=status_code, media_type="application/json")


async def _chunks_of(file: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await file.read(UPLOAD_CHUNK_BYTES):
        yield chunk


@asynccontextmanager
async def _spooled(chunks: AsyncIterator[bytes], limit: int) -> AsyncIterator[Path]:
    """The upload written to a temporary file (deleted after the block), never held whole in memory; or
    PayloadTooLarge as soon as it passes `limit` bytes."""
    with tempfile.TemporaryDirectory(prefix="flywheel-upload-") as directory:
        path = Path(directory) / "model.onnx"
        received = 0
        with path.open("wb") as file:
            async for chunk in chunks:
                received += len(chunk)
                if received > limit:
                    raise PayloadTooLarge(f"the upload is larger than the limit of {limit} bytes")
                file.write(chunk)  # to the page cache: cheaper than a thread hop per chunk
        yield path


def _text_field(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _json_field(value: object, name: str) -> Any:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"multipart field {name!r} must be text holding JSON")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as error:
        raise InvalidRequest(f"multipart field {name!r} is not valid JSON: {error}") from error
    if not isinstance(parsed, dict):
        raise InvalidRequest(f"multipart field {name!r} must be a JSON object")
    if name == "tags" and not all(isinstance(v, str) for v in parsed.values()):
        raise InvalidRequest("multipart field 'tags' must map names to strings")
    return parsed
