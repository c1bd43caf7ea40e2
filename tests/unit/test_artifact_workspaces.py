"""Each workspace's data is under `workspaces/<workspace>/`; a caller names only its own workspace's
objects, and objects stored before workspaces (outside every workspace's prefix) are `default`'s."""

from __future__ import annotations

import pytest

from shared.artifacts import InvalidArtifactKey
from shared.artifacts.workspaces import owning_workspace, visible_to, workspace_key


def test_what_a_workspace_stores_goes_under_its_prefix() -> None:
    assert workspace_key("risk", "datasets/abc/credit.csv") == "workspaces/risk/datasets/abc/credit.csv"
    with pytest.raises(InvalidArtifactKey):
        workspace_key("risk", "../fraud/datasets/x.csv")


@pytest.mark.parametrize(
    ("key", "workspace"),
    [
        ("workspaces/risk/datasets/abc/credit.csv", "risk"),
        ("workspaces/fraud/batch/uploads/1/rows.csv", "fraud"),
        ("datasets/abc/credit.csv", "default"),  # stored before workspaces
        ("data/customers.csv", "default"),
        ("workspaces-old/risk/x.csv", "default"),  # not the prefix, only alike
    ],
)
def test_an_objects_workspace_is_its_prefixs_or_default(key: str, workspace: str) -> None:
    assert owning_workspace(key) == workspace


def test_a_caller_names_only_its_workspaces_objects_and_the_services_token_any() -> None:
    risk, legacy = "workspaces/risk/datasets/a/c.csv", "datasets/a/c.csv"
    assert visible_to(risk, "risk")
    assert not visible_to(risk, "fraud")
    assert not visible_to(risk, "default")
    assert visible_to(legacy, "default")
    assert not visible_to(legacy, "risk")
    assert visible_to(risk, None)
    assert visible_to(legacy, None)


def test_what_the_services_keep_for_themselves_no_caller_can_name() -> None:
    for key in (
        "runs/r1/artifacts/data.csv",
        "models/credit/uploads/u1/model.onnx",
        "batch/jobs/j1/parts/1.csv",
    ):
        assert owning_workspace(key) is None
        assert not visible_to(key, "default")
        assert not visible_to(key, "risk")
        assert visible_to(key, None)  # the services' token
