"""Artifacts on S3 (MinIO or any S3 server) through the `minio` client, run off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from minio import Minio
from minio.error import S3Error

from shared.artifacts.base import (
    ArtifactNotFound,
    ArtifactStore,
    InvalidArtifactKey,
    ObjectInfo,
    Spooled,
    validate_key,
)

SHA256_METADATA = "sha256"  # stored as x-amz-meta-sha256
_MISSING_CODES = {"NoSuchKey", "NoSuchObject", "NoSuchBucket"}


class S3ArtifactStore(ArtifactStore):
    def __init__(
        self, endpoint: str, *, access_key: str, secret_key: str, bucket: str, region: str = "us-east-1"
    ) -> None:
        parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"S3 endpoint {endpoint!r} is not of the form http(s)://host:port")
        self.bucket = bucket
        self.client = Minio(
            parts.netloc,
            access_key=access_key,
            secret_key=secret_key,
            secure=parts.scheme == "https",
            region=region,
        )

    async def start(self) -> None:
        def ensure_bucket() -> None:
            if self.client.bucket_exists(self.bucket):
                return
            try:
                self.client.make_bucket(self.bucket)
            except S3Error as error:  # another replica created it first
                if error.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

        await asyncio.to_thread(ensure_bucket)

    async def ready(self) -> bool:
        return await asyncio.to_thread(self.client.bucket_exists, self.bucket)

    async def _put_spooled(self, key: str, spooled: Spooled, content_type: str) -> ObjectInfo:
        # A single PUT or a multipart upload that minio aborts on failure: never a partial object.
        await asyncio.to_thread(
            self.client.put_object,
            self.bucket,
            key,
            spooled.rewind(),
            spooled.size,
            content_type=content_type,
            metadata={SHA256_METADATA: spooled.sha256},
        )
        return ObjectInfo(
            key=key, uri=self.uri(key), size=spooled.size, sha256=spooled.sha256, content_type=content_type
        )

    async def stream(self, key: str, chunk_size: int = 1024 * 1024) -> AsyncIterator[bytes]:
        validate_key(key)
        response = await self._call(key, self.client.get_object, self.bucket, key)
        try:
            while chunk := await asyncio.to_thread(response.read, chunk_size):
                yield chunk
        finally:
            response.close()
            response.release_conn()

    async def stat(self, key: str) -> ObjectInfo:
        validate_key(key)
        result = await self._call(key, self.client.stat_object, self.bucket, key)
        metadata = {name.lower(): value for name, value in (result.metadata or {}).items()}
        return ObjectInfo(
            key=key,
            uri=self.uri(key),
            size=result.size or 0,
            sha256=metadata.get(f"x-amz-meta-{SHA256_METADATA}"),
            content_type=result.content_type or "application/octet-stream",
            last_modified=result.last_modified,
        )

    async def delete(self, key: str) -> None:
        validate_key(key)
        await asyncio.to_thread(self.client.remove_object, self.bucket, key)

    async def presigned_url(self, key: str, expires: timedelta = timedelta(hours=1)) -> str:
        validate_key(key)
        url: str = await asyncio.to_thread(self.client.presigned_get_object, self.bucket, key, expires)
        return url

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{validate_key(key)}"

    def key_from_uri(self, uri: str) -> str:
        prefix = f"s3://{self.bucket}/"
        if not uri.startswith(prefix):
            raise InvalidArtifactKey(f"{uri!r} is not in this store (expected {prefix}...)")
        return validate_key(uri.removeprefix(prefix))

    async def _call(self, key: str, function: Any, *args: Any) -> Any:
        try:
            return await asyncio.to_thread(function, *args)
        except S3Error as error:
            if error.code in _MISSING_CODES:
                raise ArtifactNotFound(f"no artifact {key!r} in bucket {self.bucket!r}") from error
            raise
