"""Artifacts on a real MinIO server: sha256 recorded, traversal refused, failed uploads leave nothing."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator

import httpx
import pytest

from shared.artifacts import ArtifactNotFound, InvalidArtifactKey, S3ArtifactStore


async def chunks_of(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_bytes_round_trip_with_their_sha256(s3_store: S3ArtifactStore, unique_name: str) -> None:
    data = b"onnx model bytes \x00\x01"
    key = f"{unique_name}/model.onnx"
    stored = await s3_store.put_bytes(key, data, content_type="application/octet-stream")
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored.uri == f"s3://flywheel-tests/{key}"
    assert await s3_store.get_bytes(key) == data
    stat = await s3_store.stat(key)
    assert (stat.size, stat.sha256, stat.content_type) == (
        len(data),
        stored.sha256,
        "application/octet-stream",
    )


async def test_large_stream_uploads_in_parts_and_keeps_its_sha256(
    s3_store: S3ArtifactStore, unique_name: str
) -> None:
    data = os.urandom(12 * 1024 * 1024)  # over minio's 5 MiB part size: a multipart upload
    key = f"{unique_name}/dataset.parquet"
    stored = await s3_store.put_stream(key, chunks_of(data, 1024 * 1024))
    assert stored.size == len(data)
    assert (await s3_store.stat(key)).sha256 == hashlib.sha256(data).hexdigest()
    assert hashlib.sha256(await s3_store.get_bytes(key)).hexdigest() == stored.sha256


async def test_a_stream_that_fails_midway_leaves_no_object(
    s3_store: S3ArtifactStore, unique_name: str
) -> None:
    key = f"{unique_name}/broken.bin"

    async def failing_stream() -> AsyncIterator[bytes]:
        yield b"x" * 1024
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await s3_store.put_stream(key, failing_stream())
    with pytest.raises(ArtifactNotFound):
        await s3_store.stat(key)


@pytest.mark.parametrize("key", ["../escape", "a/../../b", "/etc/passwd", "a//b", "a\\b", ""])
async def test_keys_that_could_escape_the_bucket_are_refused(s3_store: S3ArtifactStore, key: str) -> None:
    with pytest.raises(InvalidArtifactKey):
        await s3_store.put_bytes(key, b"nope")
    with pytest.raises(InvalidArtifactKey):
        await s3_store.stat(key)


async def test_presigned_url_downloads_the_object(s3_store: S3ArtifactStore, unique_name: str) -> None:
    key = f"{unique_name}/report.json"
    await s3_store.put_bytes(key, b'{"ok": true}', content_type="application/json")
    url = await s3_store.presigned_url(key)
    async with httpx.AsyncClient() as client:
        response = await client.get(url)
    assert response.status_code == 200
    assert response.content == b'{"ok": true}'


async def test_missing_and_deleted_objects_read_as_not_found(
    s3_store: S3ArtifactStore, unique_name: str
) -> None:
    key = f"{unique_name}/gone.bin"
    with pytest.raises(ArtifactNotFound):
        await s3_store.get_bytes(key)
    await s3_store.put_bytes(key, b"soon gone")
    await s3_store.delete(key)
    with pytest.raises(ArtifactNotFound):
        await s3_store.stat(key)


async def test_uris_of_this_bucket_map_back_to_keys_and_others_are_refused(s3_store: S3ArtifactStore) -> None:
    assert s3_store.key_from_uri("s3://flywheel-tests/models/m/1/model.onnx") == "models/m/1/model.onnx"
    for foreign in ("s3://other-bucket/x", "s3://flywheel-tests/../x", "file:///etc/passwd"):
        with pytest.raises(InvalidArtifactKey):
            s3_store.key_from_uri(foreign)
