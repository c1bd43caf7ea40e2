"""Where each workspace's data lives in the store: under `workspaces/<workspace>/`.

What a caller uploads goes under its workspace's prefix, and a URI a caller names (a dataset, a batch
input or output) must be under its own. Objects outside any workspace's prefix were stored before
workspaces existed and are the `default` workspace's, except what the services keep for themselves (run
artifacts, model files, batch parts), which belong to no workspace: their own routes check who may read
them, and no caller can name them as data. The services' token sees every workspace's.
"""

from __future__ import annotations

from shared.artifacts.base import validate_key
from shared.auth import DEFAULT_WORKSPACE

WORKSPACES_PREFIX = "workspaces/"


def workspace_key(workspace: str, key: str) -> str:
    """`key` under the workspace's prefix (InvalidArtifactKey when it is not a safe key)."""
    return validate_key(f"{WORKSPACES_PREFIX}{workspace}/{validate_key(key)}")


# The registry's run artifacts and model files, the batch service's parts of file jobs.
SERVICE_PREFIXES = ("runs/", "models/", "batch/jobs/")


def owning_workspace(key: str) -> str | None:
    """The workspace whose data the object at `key` (a valid key) is; None for the services' own."""
    if key.startswith(WORKSPACES_PREFIX):
        return key.split("/", 2)[1]
    if key.startswith(SERVICE_PREFIXES):
        return None
    return DEFAULT_WORKSPACE


def visible_to(key: str, scope: str | None) -> bool:
    """Whether a caller of workspace `scope` (None: every workspace) may name the object at `key`."""
    return scope is None or owning_workspace(key) == scope
