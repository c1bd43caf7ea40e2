"""Artifacts in a local directory, for the embedded mode and unit tests.

Objects live under `<root>/objects/<key>`; their sha256 and content type in `<root>/meta/<key>.json`.
Writes go to a temporary file that is renamed into place, so a failed write leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

from shared.artifacts.base import (
    ArtifactNotFound,
    ArtifactStore,
    InvalidArtifactKey,
    ObjectInfo,
    Spooled,
    validate_key,
)


class FilesystemArtifactStore(ArtifactStore):
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.objects = self.root / "objects"
        self.meta = self.root / "meta"

    async def start(self) -> None:
        self.objects.mkdir(parents=True, exist_ok=True)
        self.meta.mkdir(parents=True, exist_ok=True)

    async def ready(self) -> bool:
        return self.objects.is_dir()

    def _paths(self, key: str) -> tuple[Path, Path]:
        validate_key(key)
        return self.objects / key, self.meta / f"{key}.json"

    async def _put_spooled(self, key: str, spooled: Spooled, content_type: str) -> ObjectInfo:
        path, meta_path = self._paths(key)

        document = json.dumps({"sha256": spooled.sha256, "content_type": content_type}).encode()

        def write() -> None:
            _write_atomically(path, lambda file: shutil.copyfileobj(spooled.rewind(), file))
            try:
                _write_atomically(meta_path, lambda file: file.write(document))
            except BaseException:  # an object without its sha256 would be a half-written artifact
                path.unlink(missing_ok=True)
                raise

        await asyncio.to_thread(write)
        return ObjectInfo(
            key=key, uri=self.uri(key), size=spooled.size, sha256=spooled.sha256, content_type=content_type
        )

    async def stream(self, key: str, chunk_size: int = 1024 * 1024) -> AsyncIterator[bytes]:
        path, _ = self._paths(key)
        try:
            file = await asyncio.to_thread(path.open, "rb")
        except (FileNotFoundError, IsADirectoryError) as error:
            raise ArtifactNotFound(f"no artifact {key!r} under {self.root}") from error
        try:
            while chunk := await asyncio.to_thread(file.read, chunk_size):
                yield chunk
        finally:
            file.close()

    async def stat(self, key: str) -> ObjectInfo:
        path, meta_path = self._paths(key)
        if not path.is_file():
            raise ArtifactNotFound(f"no artifact {key!r} under {self.root}")
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        status = path.stat()
        return ObjectInfo(
            key=key,
            uri=self.uri(key),
            size=status.st_size,
            sha256=meta.get("sha256"),
            content_type=meta.get("content_type", "application/octet-stream"),
            last_modified=datetime.fromtimestamp(status.st_mtime, UTC),
        )

    async def delete(self, key: str) -> None:
        path, meta_path = self._paths(key)
        path.unlink(missing_ok=True)
        meta_path.unlink(missing_ok=True)

    async def presigned_url(self, key: str, expires: timedelta = timedelta(hours=1)) -> str:
        """The file's own URI: on one machine the path is the download link (it does not expire)."""
        return self.uri(key)

    def uri(self, key: str) -> str:
        path, _ = self._paths(key)
        return path.as_uri()

    def key_from_uri(self, uri: str) -> str:
        prefix = self.objects.as_uri() + "/"
        if not uri.startswith(prefix):
            raise InvalidArtifactKey(f"{uri!r} is not in this store (expected {prefix}...)")
        return validate_key(uri.removeprefix(prefix))


def _write_atomically(target: Path, write: Callable[[IO[bytes]], object]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
    try:
        with os.fdopen(descriptor, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
