"""Artifact keys are relative paths that cannot leave their store."""

from __future__ import annotations

import pytest

from shared.artifacts import InvalidArtifactKey, validate_key


@pytest.mark.parametrize(
    "key", ["model.onnx", "models/credit-risk/3/model.onnx", "runs/abc/artifacts/report v2.html", "a.b/c..d"]
)
def test_relative_keys_are_accepted(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "empty"),
        ("/etc/passwd", "absolute"),
        ("../secrets", "'..' path segment"),
        ("models/../../x", "'..' path segment"),
        ("models/./x", "'.' or '..'"),
        ("models//x", "empty"),
        ("models/", "empty"),
        ("models\\..\\x", "backslash"),
        ("bad\x00key", "control character"),
        ("k" * 1025, "longer than 1024"),
    ],
)
def test_keys_that_could_escape_or_confuse_the_store_are_refused(key: str, reason: str) -> None:
    with pytest.raises(InvalidArtifactKey, match=reason):
        validate_key(key)
