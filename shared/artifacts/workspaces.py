"""Where each workspace's data lives in the store: under `workspaces/<workspace>/`.

What a caller uploads goes under its workspace's prefix, and a URI a caller names (a dataset, a batch
input or output) must be under its own. Objects outside any workspace's prefix were stored before
workspaces existed and are the `default` workspace's. The services' token sees every workspace's.
"""

from __future__ import annotations

from shared.artifacts.base import validate_key
from shared.auth import DEFAULT_WORKSPACE

WORKSPACES_PREFIX = "workspaces/"


def workspace_key(workspace: str, key: str) -> str:
    """`key` under the workspace's prefix (InvalidArtifactKey when it is not a safe key)."""
    return validate_key(f"{WORKSPACES_PREFIX}{workspace}/{validate_key(key)}")


def owning_workspace(key: str) -> str:
    """The workspace whose data the object at `key` (a valid key) is."""
    if key.startswith(WORKSPACES_PREFIX):
        return key.split("/", 2)[1]
    return DEFAULT_WORKSPACE


def visible_to(key: str, scope: str | None) -> bool:
    """Whether a caller of workspace `scope` (None: every workspace) may name the object at `key`."""
    return scope is None or owning_workspace(key) == scope
