"""The reference each model version is compared with: the profile of its training data, which the
trainer stored with the run and the registry points at (`reference_profile_uri`)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import orjson

from services.monitor.reference import ProfileError, Reference
from shared.artifacts import ArtifactNotFound, ArtifactStore, InvalidArtifactKey
from shared.model_versions import VersionRecord

log = logging.getLogger(__name__)

DescribeVersion = Callable[[str, int | None, str | None], Awaitable[VersionRecord | None]]


class References:
    """Loads each version's profile once; a version without a usable profile is remembered as None (its
    traffic is counted but not compared) until `forget`."""

    def __init__(self, describe_version: DescribeVersion, artifacts: ArtifactStore) -> None:
        self.describe_version = describe_version
        self.artifacts = artifacts
        self._loaded: dict[tuple[str, int], Reference | None] = {}

    async def of(self, model: str, version: int) -> Reference | None:
        key = (model, version)
        if key not in self._loaded:
            self._loaded[key] = await self._load(model, version)
        return self._loaded[key]

    def forget(self, model: str, version: int) -> None:
        self._loaded.pop((model, version), None)

    async def _load(self, model: str, version: int) -> Reference | None:
        record = await self.describe_version(model, version, None)
        if record is None or record.reference_profile_uri is None:
            log.warning(
                "no reference profile: this version's traffic is not compared",
                extra={"model": model, "version": version},
            )
            return None
        try:
            raw = await self.artifacts.get_bytes(self.artifacts.key_from_uri(record.reference_profile_uri))
            return Reference.from_profile(orjson.loads(raw))
        except (
            ArtifactNotFound,
            InvalidArtifactKey,
            ProfileError,
            orjson.JSONDecodeError,
            ValueError,
        ) as error:
            log.error(
                "the reference profile cannot be used",
                extra={
                    "model": model,
                    "version": version,
                    "uri": record.reference_profile_uri,
                    "error": str(error),
                },
            )
            return None
