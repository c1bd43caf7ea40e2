"""The model versions serving holds: loaded from the artifact store, checked, warmed, swapped and evicted.

A version is loaded once (its sha256 checked against the registry's record), warmed with one inference,
and given its own batcher. Aliases (`production`, `canary`, ...) map to versions; moving an alias loads
and warms the new version first and then switches the map in one assignment, so requests in flight
finish on the version they started with and new ones never wait for a load. At most `max_loaded`
versions stay in memory; the least recently used one is unloaded (after answering its queue) when
another is needed. Aliases are pinned: the versions they point at are never evicted.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any

import numpy as np
import onnxruntime

from services.serving.batching import AdaptiveBatcher
from services.serving.metrics import VersionMetrics
from shared.artifacts import ArtifactStore
from shared.model_versions import (
    AliasTable,
    ModelNotFound,
    VersionRecord,
    default_intra_op_threads,
    load_session,
)
from shared.tensors import NUMPY_DTYPES, Tensors

log = logging.getLogger(__name__)


DescribeVersion = Callable[[str, int | None, str | None], Awaitable[VersionRecord | None]]


class LoadedModel:
    """One version in memory: an onnxruntime session behind its own batcher."""

    def __init__(
        self,
        record: VersionRecord,
        session: onnxruntime.InferenceSession,
        batcher_settings: dict[str, Any],
        executor: Executor | None,
    ) -> None:
        self.name = record.name
        self.version = record.version
        self.workspace = record.workspace
        self.signature = record.signature
        self.session = session
        self.output_names = [output.name for output in record.signature.outputs]
        self.metrics = VersionMetrics.of(record.name, record.version)
        self.batcher = AdaptiveBatcher(
            self.infer, executor=executor, on_batch=self._on_batch, **batcher_settings
        )

    def _on_batch(self, rows: int) -> None:
        # Set per batch, not read on scrape: worker processes share metrics through files, not callbacks.
        self.metrics.batch_rows.observe(rows)
        self.metrics.queue_depth.set(self.batcher.queue_depth)

    async def unload(self) -> None:
        """Answer what is queued, then let go of the session and its metrics."""
        await self.batcher.stop()
        VersionMetrics.remove(self.name, self.version)

    def infer(self, inputs: Tensors) -> Tensors:
        """One onnxruntime call (blocking: the batcher runs it in the executor)."""
        return dict(zip(self.output_names, self.session.run(self.output_names, inputs), strict=True))

    async def predict(self, inputs: Tensors) -> Tensors:
        """Infer through the batcher, merged with concurrent requests for this version."""
        return await self.batcher.submit(inputs)

    def warm_up_inputs(self) -> Tensors:
        """One row of neutral values for every input: the first inference pays the allocations."""
        return {
            spec.name: np.full(
                [1 if size < 0 else size for size in spec.shape] or [1],
                "" if spec.datatype == "BYTES" else 0,
                dtype=NUMPY_DTYPES[spec.datatype],
            )
            for spec in self.signature.inputs
        }


class ModelStore:
    def __init__(
        self,
        describe_version: DescribeVersion,
        artifacts: ArtifactStore,
        *,
        max_loaded: int = 8,
        intra_op_threads: int | None = None,
        batcher_settings: dict[str, Any] | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.describe_version = describe_version
        self.artifacts = artifacts
        self.max_loaded = max_loaded
        self.intra_op_threads = intra_op_threads or default_intra_op_threads()
        self.batcher_settings = batcher_settings or {}
        self.executor = executor
        self._loaded: OrderedDict[tuple[str, int], LoadedModel] = OrderedDict()
        self._aliases = AliasTable()
        self._loading: dict[tuple[str, int], asyncio.Task[LoadedModel]] = {}
        # Deleted while their load was under way: the load is thrown away when it ends, not installed.
        self._deleted_while_loading: set[tuple[str, int]] = set()

    async def resolve(
        self, name: str, *, version: int | None = None, alias: str = "production"
    ) -> LoadedModel:
        """The loaded version asked for (an explicit version, else the alias's); loads it when needed."""
        if version is None:
            version = self._aliases.get(name, alias)
            if version is None:
                record = await self.describe_version(name, None, alias)
                if record is None:
                    raise ModelNotFound(f"model {name!r} has no alias {alias!r}")
                model = await self._load(record)
                self._aliases.move(name, alias, record.version)
                return model
        loaded = self._loaded.get((name, version))
        if loaded is not None:
            self._loaded.move_to_end((name, version))
            return loaded
        record = await self.describe_version(name, version, None)
        if record is None:
            raise ModelNotFound(f"model {name!r} has no version {version}")
        return await self._load(record)

    async def promote(self, name: str, alias: str, version: int) -> None:
        """Move an alias: load and warm the new version first, then switch (requests never wait on it)."""
        record = await self.describe_version(name, version, None)
        if record is None:
            raise ModelNotFound(f"model {name!r} has no version {version}")
        await self._load(record)
        self._aliases.move(name, alias, version)
        log.info("alias moved", extra={"model": name, "alias": alias, "version": version})

    def forget_alias(self, name: str, alias: str) -> None:
        """An alias was deleted: the next request for it asks the registry (and gets a 404)."""
        if self._aliases.forget(name, alias):
            log.info("alias deleted", extra={"model": name, "alias": alias})

    async def forget_versions(self, name: str, versions: list[int]) -> None:
        """Versions were deleted: unload them (requests already queued are answered) and forget the
        aliases that pointed at them, so that the next request asks the registry."""
        self._aliases.forget_versions(name, versions)
        for version in versions:
            loading = self._loading.get((name, version))
            if loading is not None and not loading.done():
                self._deleted_while_loading.add((name, version))
            loaded = self._loaded.pop((name, version), None)
            if loaded is not None:
                await loaded.unload()
                log.info("model unloaded: deleted", extra={"model": name, "version": version})

    def aliases_of(self, name: str) -> dict[str, int]:
        return self._aliases.of_model(name)

    def loaded_versions(self) -> list[tuple[str, int]]:
        return list(self._loaded)

    async def _load(self, record: VersionRecord) -> LoadedModel:
        key = (record.name, record.version)
        if key in self._loaded:
            self._loaded.move_to_end(key)
            return self._loaded[key]
        if key not in self._loading:  # concurrent requests for a cold version share one load
            self._loading[key] = asyncio.create_task(self._load_now(record))
        try:
            return await asyncio.shield(self._loading[key])
        finally:
            if self._loading.get(key) is not None and self._loading[key].done():
                del self._loading[key]

    async def _load_now(self, record: VersionRecord) -> LoadedModel:
        key = (record.name, record.version)
        try:
            session = await load_session(record, self.artifacts, self.intra_op_threads, self.executor)
            loop = asyncio.get_running_loop()
            model = LoadedModel(record, session, self.batcher_settings, self.executor)
            await loop.run_in_executor(self.executor, model.infer, model.warm_up_inputs())
            await model.batcher.start()
        finally:
            deleted = key in self._deleted_while_loading
            self._deleted_while_loading.discard(key)
        if deleted:
            await model.unload()
            raise ModelNotFound(f"model {record.name!r} version {record.version} was deleted as it loaded")
        self._loaded[key] = model
        await self._evict_beyond_capacity()
        log.info("model loaded", extra={"model": record.name, "version": record.version})
        return model

    async def _evict_beyond_capacity(self) -> None:
        pinned = self._aliases.pinned()
        for key in list(self._loaded):
            if len(self._loaded) <= self.max_loaded:
                break
            if key in pinned:
                continue
            await self._loaded.pop(key).unload()
            log.info("model unloaded", extra={"model": key[0], "version": key[1]})

    async def close(self) -> None:
        for model in self._loaded.values():
            await model.unload()
        self._loaded.clear()
