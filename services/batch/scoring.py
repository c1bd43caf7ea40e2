"""Scoring rows with model versions, for Kafka-fed records and file jobs alike.

Versions are resolved through the registry (by number, or by alias), loaded once with their sha256
checked, and kept in a bounded LRU. Aliases are remembered and moved by `model-promoted`; the caller
resolves a model once per batch, so a batch is scored entirely by one version. All rows of a batch
that share a version are scored in one onnxruntime call; rows that cannot be scored are singled out
with the reason, and the others are still scored.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import onnxruntime

from shared.artifacts import ArtifactStore
from shared.events import ModelSignature
from shared.model_versions import ModelNotFound, VersionRecord, load_session
from shared.tensors import InvalidInput, Tensors, instances_to_tensors, json_values

log = logging.getLogger(__name__)

DescribeVersion = Callable[[str, int | None, str | None], Awaitable[VersionRecord | None]]


@dataclass(frozen=True)
class ModelRef:
    """Which model a record or a job asks for: a version number, else an alias."""

    name: str
    version: int | None = None
    alias: str = "production"

    def __str__(self) -> str:
        return f"{self.name} v{self.version}" if self.version is not None else f"{self.name}@{self.alias}"


class ScoringVersion:
    """One loaded version: its record and an onnxruntime session."""

    def __init__(self, record: VersionRecord, session: onnxruntime.InferenceSession) -> None:
        self.record = record
        self.name = record.name
        self.version = record.version
        self.signature: ModelSignature = record.signature
        self.session = session
        self.output_names = [output.name for output in record.signature.outputs]

    def infer(self, inputs: Tensors) -> Tensors:
        """One onnxruntime call (blocking: run it off the event loop)."""
        return dict(zip(self.output_names, self.session.run(self.output_names, inputs), strict=True))


@dataclass
class ScoredRows:
    """The outcome of scoring a list of rows: `inputs` and `outputs` have one row per index in `scored`
    (in order); `rejected` maps the other indexes to why they could not be scored."""

    scored: list[int]
    inputs: Tensors
    outputs: Tensors
    rejected: dict[int, str] = field(default_factory=dict)

    def output_rows(self) -> list[dict[str, Any]]:
        """One JSON-ready object of outputs per scored row."""
        columns = {name: json_values(array) for name, array in self.outputs.items()}
        return [{name: values[row] for name, values in columns.items()} for row in range(len(self.scored))]


class ScoringModels:
    def __init__(
        self,
        describe_version: DescribeVersion,
        artifacts: ArtifactStore,
        *,
        intra_op_threads: int,
        max_loaded: int = 8,
        executor: Executor | None = None,
    ) -> None:
        self.describe_version = describe_version
        self.artifacts = artifacts
        self.intra_op_threads = intra_op_threads
        self.max_loaded = max_loaded
        self.executor = executor
        self._loaded: OrderedDict[tuple[str, int], ScoringVersion] = OrderedDict()
        self._aliases: dict[tuple[str, str], int] = {}
        self._lock = asyncio.Lock()  # one load at a time: a batch waits for its versions anyway

    async def resolve(self, ref: ModelRef) -> ScoringVersion:
        """The version `ref` names, loaded; ModelNotFound, ModelUnavailable or RegistryUnavailable."""
        version = ref.version if ref.version is not None else self._aliases.get((ref.name, ref.alias))
        if version is not None and (ref.name, version) in self._loaded:
            self._loaded.move_to_end((ref.name, version))
            return self._loaded[(ref.name, version)]
        async with self._lock:
            # An alias already known (or moved by model-promoted) is asked for by its version number.
            record = await self.describe_version(ref.name, version, None if version else ref.alias)
            if record is None:
                raise ModelNotFound(f"no model version {ref} (or it failed registration)")
            if ref.version is None:
                self._aliases[(ref.name, ref.alias)] = record.version
            return await self._load(record)

    def promote(self, name: str, alias: str, version: int) -> None:
        """An alias moved: batches resolved from now on use the new version (loaded when first needed)."""
        self._aliases[(name, alias)] = version
        log.info("alias moved", extra={"model": name, "alias": alias, "version": version})

    async def _load(self, record: VersionRecord) -> ScoringVersion:
        key = (record.name, record.version)
        if key not in self._loaded:
            session = await load_session(record, self.artifacts, self.intra_op_threads, self.executor)
            self._loaded[key] = ScoringVersion(record, session)
            pinned = {(name, version) for (name, _), version in self._aliases.items()}
            for loaded in list(self._loaded):
                if len(self._loaded) <= self.max_loaded:
                    break
                if loaded not in pinned and loaded != key:
                    del self._loaded[loaded]
            log.info("model loaded", extra={"model": record.name, "version": record.version})
        self._loaded.move_to_end(key)
        return self._loaded[key]

    async def score(self, version: ScoringVersion, rows: list[Any]) -> ScoredRows:
        """Score `rows` (each a list of feature values or an object of named features) in one call;
        rows that do not fit the signature are rejected with the reason, the others scored."""
        scored, inputs, rejected = _checked_inputs(rows, version.signature)
        if not scored:
            return ScoredRows([], {}, {}, rejected)
        loop = asyncio.get_running_loop()
        outputs = await loop.run_in_executor(self.executor, version.infer, inputs)
        return ScoredRows(scored, inputs, outputs, rejected)


def _checked_inputs(rows: list[Any], signature: ModelSignature) -> tuple[list[int], Tensors, dict[int, str]]:
    """All rows as inputs in one pass when they all fit; otherwise each row is checked alone to find
    the ones that do not, and the rest are converted together."""
    try:
        return list(range(len(rows))), instances_to_tensors(rows, signature), {}
    except InvalidInput:
        pass
    rejected: dict[int, str] = {}
    for index, row in enumerate(rows):
        try:
            instances_to_tensors([row], signature)
        except InvalidInput as error:
            rejected[index] = str(error)  # about "instance 0": the record itself
    scored = [index for index in range(len(rows)) if index not in rejected]
    if not scored:
        return [], {}, rejected
    return scored, instances_to_tensors([rows[index] for index in scored], signature), rejected
