"""The artifact store interface: immutable-ish blobs (models, datasets, profiles, reports) by key.

Every object records the sha256 of its bytes. Keys are relative paths inside the store; anything
that could escape it (`..`, absolute paths, backslashes) is refused. A failed upload leaves no object.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator
from datetime import datetime, timedelta
from typing import BinaryIO, cast

from pydantic import BaseModel, ConfigDict

MAX_KEY_BYTES = 1024
SPOOL_IN_MEMORY_BYTES = 8 * 1024 * 1024
_FORBIDDEN_KEY_CHARACTERS = re.compile(r"[\x00-\x1f\x7f\\]")


class InvalidArtifactKey(ValueError):
    """The key (or URI) does not name an object inside this store."""


class ArtifactNotFound(LookupError):
    """No object under that key."""


class ObjectInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    key: str
    uri: str
    size: int
    sha256: str | None  # None only for objects written by something other than Flywheel
    content_type: str
    last_modified: datetime | None = None


def validate_key(key: str) -> str:
    """Return `key` if it is a safe relative object key, else raise InvalidArtifactKey saying why."""
    if not key:
        raise InvalidArtifactKey("artifact key is empty")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise InvalidArtifactKey(f"artifact key is longer than {MAX_KEY_BYTES} bytes")
    if key.startswith("/"):
        raise InvalidArtifactKey(f"artifact key {key!r} is absolute; keys are relative to the store")
    if _FORBIDDEN_KEY_CHARACTERS.search(key):
        raise InvalidArtifactKey(f"artifact key {key!r} contains a control character or backslash")
    segments = key.split("/")
    if any(segment in ("", ".", "..") for segment in segments):
        raise InvalidArtifactKey(f"artifact key {key!r} has an empty, '.' or '..' path segment")
    return key


class Spooled:
    """Bytes gathered from a stream with their size and sha256; large uploads spill to disk."""

    def __init__(self) -> None:
        self.file = cast(BinaryIO, tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES))  # noqa: SIM115 (closed by close())
        self.size = 0
        self._hash = hashlib.sha256()

    def write(self, chunk: bytes) -> None:
        self.file.write(chunk)
        self._hash.update(chunk)
        self.size += len(chunk)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def rewind(self) -> BinaryIO:
        self.file.seek(0)
        return self.file

    def close(self) -> None:
        self.file.close()


class ArtifactStore(ABC):
    """Put, get, stat, delete and share objects by key."""

    async def start(self) -> None:  # noqa: B027 (an optional hook)
        """Prepare the store (create the bucket or directory)."""

    async def ready(self) -> bool:
        return True

    async def put_bytes(
        self, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> ObjectInfo:
        return await self.put_stream(key, _single_chunk(data), content_type)

    async def put_stream(
        self, key: str, chunks: AsyncIterable[bytes], content_type: str = "application/octet-stream"
    ) -> ObjectInfo:
        """Store a stream of unknown length with bounded memory; the object appears whole or not at all."""
        validate_key(key)
        spooled = Spooled()
        try:
            async for chunk in chunks:
                spooled.write(chunk)
            return await self._put_spooled(key, spooled, content_type)
        finally:
            spooled.close()

    async def get_bytes(self, key: str) -> bytes:
        return b"".join([chunk async for chunk in self.stream(key)])

    @abstractmethod
    def stream(self, key: str, chunk_size: int = 1024 * 1024) -> AsyncIterator[bytes]:
        """The object's bytes in chunks; raises ArtifactNotFound."""

    @abstractmethod
    async def stat(self, key: str) -> ObjectInfo:
        """Size, sha256 and content type; raises ArtifactNotFound."""

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Remove the object; deleting a missing object is not an error."""

    @abstractmethod
    async def presigned_url(self, key: str, expires: timedelta = timedelta(hours=1)) -> str:
        """A URL that lets its holder download the object until it expires."""

    @abstractmethod
    def uri(self, key: str) -> str:
        """The object's URI, as recorded in events and metadata (s3://bucket/key, file:///...)."""

    @abstractmethod
    def key_from_uri(self, uri: str) -> str:
        """The key of a URI this store produced; InvalidArtifactKey for any other URI."""

    @abstractmethod
    async def _put_spooled(self, key: str, spooled: Spooled, content_type: str) -> ObjectInfo:
        """Write the spooled bytes under `key` atomically, recording their sha256."""


async def _single_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data
