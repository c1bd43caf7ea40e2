"""Which models a caller of the monitor sees: those of its workspace (the registry says whose each model
is). Another workspace's model reads as missing, and lists hold only the caller's models; subscriptions
and the alert stream hear only of the caller's workspace's models."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request

from services.monitor.alert_filters import ModelWorkspace
from shared.auth import Authenticator, Permission, require
from shared.model_versions import RegistryClient

_caller = require(Permission.READ)  # every monitor route needs READ at least (the app guards them)


async def caller_scope(request: Request) -> str | None:
    """The one workspace the caller sees; None for every workspace (the services' token, or access
    control off, when every caller is the same anonymous admin)."""
    principal = await _caller(request)
    return None if principal.token_id is None else principal.scope


async def visible_models(request: Request) -> set[str] | None:
    """The names of the caller's workspace's models; None for a caller that sees every workspace."""
    scope = await caller_scope(request)
    if scope is None:
        return None
    registry: RegistryClient = request.app.state.registry
    return await registry.models_in(scope)


async def check_model_workspace(request: Request) -> None:
    """For a route about one model (`{name}` or `{model}` in its path): 404 unless the model is the
    caller's workspace's."""
    name = request.path_params.get("name") or request.path_params.get("model")
    if name is None:
        return
    scope = await caller_scope(request)
    if scope is None:
        return
    registry: RegistryClient = request.app.state.registry
    if await registry.workspace_of(name) != scope:
        raise HTTPException(404, f"no model named {name!r}")


def model_workspaces(app: FastAPI, registry: RegistryClient) -> ModelWorkspace | None:
    """How the alert subscribers learn whose an event's model is: from the registry, with access control
    on; None with it off (no workspaces to keep apart, and no registry needed)."""
    authenticator: Authenticator = app.state.authenticator
    return registry.workspace_of if authenticator.enabled else None


VisibleModels = Annotated[set[str] | None, Depends(visible_models)]
CallerScope = Annotated[str | None, Depends(caller_scope)]
