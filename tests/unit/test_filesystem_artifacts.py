"""The filesystem artifact store (embedded mode) keeps the S3 store's contract."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.artifacts import ArtifactNotFound, FilesystemArtifactStore, InvalidArtifactKey


@pytest.fixture
async def store(tmp_path: Path) -> FilesystemArtifactStore:
    store = FilesystemArtifactStore(tmp_path / "artifacts")
    await store.start()
    return store


async def test_bytes_round_trip_with_their_sha256(store: FilesystemArtifactStore) -> None:
    stored = await store.put_bytes("models/m/1/model.onnx", b"weights", content_type="application/onnx")
    assert stored.sha256 == hashlib.sha256(b"weights").hexdigest()
    assert await store.get_bytes("models/m/1/model.onnx") == b"weights"
    stat = await store.stat("models/m/1/model.onnx")
    assert (stat.size, stat.sha256, stat.content_type) == (7, stored.sha256, "application/onnx")
    assert store.key_from_uri(stored.uri) == "models/m/1/model.onnx"


async def test_a_stream_that_fails_midway_leaves_no_object_and_no_temporary_file(
    store: FilesystemArtifactStore, tmp_path: Path
) -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield b"partial"
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await store.put_stream("data/upload.csv", failing())
    with pytest.raises(ArtifactNotFound):
        await store.stat("data/upload.csv")
    assert [path for path in (tmp_path / "artifacts").rglob("*") if path.is_file()] == []


async def test_overwrite_replaces_object_and_sha256_together(store: FilesystemArtifactStore) -> None:
    await store.put_bytes("k", b"one")
    await store.put_bytes("k", b"two")
    assert (await store.stat("k")).sha256 == hashlib.sha256(b"two").hexdigest()
    assert await store.get_bytes("k") == b"two"


async def test_traversal_keys_and_foreign_uris_are_refused(store: FilesystemArtifactStore) -> None:
    with pytest.raises(InvalidArtifactKey):
        await store.put_bytes("../outside", b"x")
    with pytest.raises(InvalidArtifactKey):
        store.key_from_uri("file:///etc/passwd")


async def test_deleted_objects_read_as_not_found(store: FilesystemArtifactStore) -> None:
    await store.put_bytes("k", b"x")
    await store.delete("k")
    await store.delete("k")  # deleting twice is fine
    with pytest.raises(ArtifactNotFound):
        await store.get_bytes("k")
