"""Which models a caller of the monitor sees: those of its workspace (the registry says whose each model
is). Another workspace's model reads as missing, and lists hold only the caller's models."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from shared.auth import Permission, require
from shared.model_versions import RegistryClient

_caller = require(Permission.READ)  # every monitor route needs READ at least (the app guards them)


async def visible_models(request: Request) -> set[str] | None:
    """The names of the caller's workspace's models; None for a caller that sees every workspace."""
    principal = await _caller(request)
    if principal.scope is None or principal.token_id is None:  # every workspace, or access control off
        return None
    registry: RegistryClient = request.app.state.registry
    return await registry.models_in(principal.scope)


async def check_model_workspace(request: Request) -> None:
    """For a route about one model (`{name}` or `{model}` in its path): 404 unless the model is the
    caller's workspace's."""
    name = request.path_params.get("name") or request.path_params.get("model")
    if name is None:
        return
    principal = await _caller(request)
    if principal.scope is None or principal.token_id is None:  # every workspace, or access control off
        return
    registry: RegistryClient = request.app.state.registry
    if await registry.workspace_of(name) != principal.scope:
        raise HTTPException(404, f"no model named {name!r}")


VisibleModels = Annotated[set[str] | None, Depends(visible_models)]
