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
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import onnxruntime

from shared.artifacts import ArtifactStore
from shared.events import ModelSignature
from shared.model_versions import AliasTable, ModelNotFound, VersionRecord, load_session
from shared.tensors import NUMPY_DTYPES, InvalidInput, Tensors, describe, instances_to_tensors

log = logging.getLogger(__name__)

DescribeVersion = Callable[[str, int | None, str | None], Awaitable[VersionRecord | None]]


class ModelRef(NamedTuple):  # not a dataclass: each record's is hashed, and a tuple's hash is in C
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
        # One call for all of a batch's rows, which run on every intra-op thread: in 50-row calls the
        # benchmark's forest ran at 135,000 rows/s on 2 threads against 255,000 in one call.
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
        self._aliases = AliasTable()
        self._lock = asyncio.Lock()  # one load at a time: a batch waits for its versions anyway
        self._loading: tuple[str, int] | None = None  # the version whose load is under way
        self._deleted_while_loading = False  # and whether a deletion named it meanwhile

    async def resolve(self, ref: ModelRef) -> ScoringVersion:
        """The version `ref` names, loaded; ModelNotFound, ModelUnavailable or RegistryUnavailable."""
        version = ref.version if ref.version is not None else self._aliases.get(ref.name, ref.alias)
        if version is not None and (ref.name, version) in self._loaded:
            self._loaded.move_to_end((ref.name, version))
            return self._loaded[(ref.name, version)]
        async with self._lock:
            # An alias already known (or moved by model-promoted) is asked for by its version number.
            record = await self.describe_version(ref.name, version, None if version else ref.alias)
            if record is None:
                raise ModelNotFound(f"no model version {ref} (or it failed registration)")
            if ref.version is None:
                self._aliases.move(ref.name, ref.alias, record.version)
            return await self._load(record)

    def promote(self, name: str, alias: str, version: int) -> None:
        """An alias moved: batches resolved from now on use the new version (loaded when first needed)."""
        self._aliases.move(name, alias, version)
        log.info("alias moved", extra={"model": name, "alias": alias, "version": version})

    def forget_alias(self, name: str, alias: str) -> None:
        """An alias was deleted: records asking for it from the next batch on are refused."""
        if self._aliases.forget(name, alias):
            log.info("alias deleted", extra={"model": name, "alias": alias})

    def forget_versions(self, name: str, versions: list[int]) -> None:
        """Versions were deleted: drop them and the aliases that pointed at them (a batch being scored
        keeps its version until it is done)."""
        self._aliases.forget_versions(name, versions)
        for version in versions:
            if self._loading == (name, version):
                self._deleted_while_loading = True
            if self._loaded.pop((name, version), None) is not None:
                log.info("model unloaded: deleted", extra={"model": name, "version": version})

    async def _load(self, record: VersionRecord) -> ScoringVersion:
        key = (record.name, record.version)
        if key not in self._loaded:
            self._loading, self._deleted_while_loading = key, False
            try:
                session = await load_session(record, self.artifacts, self.intra_op_threads, self.executor)
            finally:
                self._loading = None
            if self._deleted_while_loading:  # thrown away, not kept for later batches
                raise ModelNotFound(
                    f"model {record.name!r} version {record.version} was deleted as it loaded"
                )
            self._loaded[key] = ScoringVersion(record, session)
            pinned = self._aliases.pinned()
            for loaded in list(self._loaded):
                if len(self._loaded) <= self.max_loaded:
                    break
                if loaded not in pinned and loaded != key:
                    del self._loaded[loaded]
            log.info("model loaded", extra={"model": record.name, "version": record.version})
        self._loaded.move_to_end(key)
        return self._loaded[key]

    async def score(self, version: ScoringVersion, rows: list[Any]) -> ScoredRows:
        """Score `rows` (each a list of feature values, an object of named features, or a 1-D array of
        doubles read from a list of numbers) in one call; rows that do not fit the signature are rejected
        with the reason, and so are rows the model itself fails on (onnxruntime's error), the others
        scored."""
        scored, inputs, rejected = _checked_inputs(rows, version.signature)
        if not scored:
            return ScoredRows([], {}, {}, rejected)
        loop = asyncio.get_running_loop()
        try:
            outputs = await loop.run_in_executor(self.executor, version.infer, inputs)
        except Exception:  # onnxruntime's errors are plain Exceptions; one row may be at fault
            kept, outputs, failed = await loop.run_in_executor(
                self.executor, _infer_row_by_row, version, inputs
            )
            rejected.update({scored[position]: reason for position, reason in failed.items()})
            inputs = {name: array[kept] for name, array in inputs.items()}
            scored = [scored[position] for position in kept]
        return ScoredRows(scored, inputs, outputs, rejected)

    async def score_columns(
        self,
        version: ScoringVersion,
        columns: Mapping[str, np.ndarray],
        features: Sequence[str] | None = None,
    ) -> ScoredRows:
        """Score a table's rows given as columns, one 1-D array per feature, in one call: named by input
        for a model with one [-1, 1] input per feature, or listed in `features` (in order) for a model
        with a single [-1, n] input. Rows with a value that does not fit (not a number, NaN or infinite,
        beyond the datatype's range, not a string for BYTES) are rejected with the reason naming the
        feature; the others are scored. InvalidInput when the columns themselves do not fit the model."""
        scored, inputs, rejected = columns_to_inputs(columns, version.signature, features)
        if not scored:
            return ScoredRows([], {}, {}, rejected)
        loop = asyncio.get_running_loop()
        outputs = await loop.run_in_executor(self.executor, version.infer, inputs)
        return ScoredRows(scored, inputs, outputs, rejected)


def _infer_row_by_row(version: ScoringVersion, inputs: Tensors) -> tuple[list[int], Tensors, dict[int, str]]:
    """After a call on all the rows failed: each row alone (blocking), so that only the rows the model
    fails on are refused. The positions of the rows scored, their outputs, and why each other failed."""
    kept: list[int] = []
    outputs: list[Tensors] = []
    failed: dict[int, str] = {}
    for position in range(len(next(iter(inputs.values())))):
        try:
            outputs.append(
                version.infer({name: array[position : position + 1] for name, array in inputs.items()})
            )
        except Exception as error:
            failed[position] = f"the model failed on the record: {error}"
        else:
            kept.append(position)
    if not outputs:
        return kept, {}, failed
    return kept, {name: np.concatenate([row[name] for row in outputs]) for name in outputs[0]}, failed


def _checked_inputs(rows: list[Any], signature: ModelSignature) -> tuple[list[int], Tensors, dict[int, str]]:
    """All rows as inputs in one pass when they all fit; otherwise each row is checked alone to find
    the ones that do not, and the rest are converted together."""
    try:
        return list(range(len(rows))), instances_to_tensors(rows, signature), {}
    except InvalidInput:
        pass
    # Rows read straight into doubles (see `services.batch.requests.features_for`) as the lists they were,
    # so that each reason reads as it does for any row.
    rows = [row.tolist() if isinstance(row, np.ndarray) else row for row in rows]
    rejected: dict[int, str] = {}
    for index, row in enumerate(rows):
        try:
            instances_to_tensors([row], signature)
        except InvalidInput as error:
            rejected[index] = str(error)  # about "instance 0": the record itself
    scored = [index for index in range(len(rows)) if index not in rejected]
    if not scored:
        return [], {}, rejected
    # Rows that each fit may still not fit together: records are independent, so named and positional ones
    # may mix (for a model with an input per feature: each form is converted apart, then joined), and rows
    # for an input of any width (-1) may differ in length (one call takes one width: the first row's).
    forms: dict[object, list[int]] = {}
    for index in scored:
        forms.setdefault("named" if isinstance(rows[index], dict) else len(rows[index]), []).append(index)
    if not takes_feature_inputs(signature):
        width = next(iter(forms))
        for other in [form for form in forms if form != width]:
            for index in forms.pop(other):
                rejected[index] = (
                    f"the record has {other} values and the first of its batch {width}; the model's input "
                    "takes any number but one in all the rows scored together"
                )
    parts = [
        instances_to_tensors([rows[index] for index in indexes], signature) for indexes in forms.values()
    ]
    joined = [index for indexes in forms.values() for index in indexes]
    in_order = np.argsort(joined, kind="stable")  # results keep their records' order
    inputs = {name: np.concatenate([part[name] for part in parts])[in_order] for name in parts[0]}
    return sorted(joined), inputs, rejected


def takes_feature_inputs(signature: ModelSignature) -> bool:
    """Whether the model has one [-1, 1] input per feature (else a single [-1, n] input, or neither)."""
    return all(len(spec.shape) == 2 and spec.shape[1] == 1 for spec in signature.inputs)


def columns_to_inputs(
    columns: Mapping[str, np.ndarray], signature: ModelSignature, features: Sequence[str] | None = None
) -> tuple[list[int], Tensors, dict[int, str]]:
    """The model's inputs from feature columns (see `ScoringModels.score_columns`), checked in whole-array
    operations: the indexes of the rows that fit, their inputs, and why each other row does not."""
    if takes_feature_inputs(signature):
        if features is not None:
            raise InvalidInput("this model takes one input per feature, by name; do not list features")
        layout = [(spec, [spec.name]) for spec in signature.inputs]
    elif len(signature.inputs) == 1 and len(signature.inputs[0].shape) == 2:
        spec = signature.inputs[0]
        if not features or spec.shape[1] not in (-1, len(features)):
            raise InvalidInput(
                f"input {spec.name!r} takes {spec.shape[1]} features; {len(features or [])} column(s) given"
            )
        layout = [(spec, list(features))]
    else:
        shapes = ", ".join(f"{spec.name} {spec.shape}" for spec in signature.inputs)
        raise InvalidInput(f"this model's inputs ({shapes}) cannot be fed from table columns")
    rows = _column_length(columns, [name for _, names in layout for name in names])
    bad = np.zeros(rows, dtype=np.bool_)
    rejected: dict[int, str] = {}
    inputs: Tensors = {}
    for spec, names in layout:
        converted = []
        for name in names:
            values, invalid, reason = _feature_values(name, np.asarray(columns[name]), spec.datatype)
            for row in np.flatnonzero(invalid & ~bad).tolist():
                rejected[row] = reason(row)
            bad |= invalid
            converted.append(values)
        inputs[spec.name] = np.column_stack(converted) if len(converted) > 1 else converted[0].reshape(-1, 1)
    if not bad.any():
        return list(range(rows)), inputs, rejected
    scored = np.flatnonzero(~bad)
    return scored.tolist(), {name: array[scored] for name, array in inputs.items()}, rejected


def _column_length(columns: Mapping[str, np.ndarray], names: list[str]) -> int:
    missing = [name for name in names if name not in columns]
    if missing:
        raise InvalidInput(f"no column for feature(s) {', '.join(map(repr, missing))}")
    lengths = {name: len(columns[name]) for name in names}
    if len(set(lengths.values())) != 1:
        raise InvalidInput(f"feature columns differ in length: {lengths}")
    return next(iter(lengths.values()))


Reason = Callable[[int], str]


def _feature_values(name: str, values: np.ndarray, datatype: str) -> tuple[np.ndarray, np.ndarray, Reason]:
    """One feature's values as `datatype`, the rows whose value does not fit, and why (by row). Rows that
    do not fit hold a placeholder in the converted array."""
    if values.ndim != 1:
        raise InvalidInput(f"feature {name!r} has shape {list(values.shape)}; expected one value a row")
    if datatype in ("FP16", "FP32", "FP64"):
        return _float_values(name, values, datatype)
    if datatype == "BYTES":
        return _string_values(name, values)
    if datatype == "BOOL":
        return _bool_values(name, values)
    return _integer_values(name, values, datatype)


def _float_values(name: str, values: np.ndarray, datatype: str) -> tuple[np.ndarray, np.ndarray, Reason]:
    if values.dtype.kind in "iuf":
        numbers = values.astype(np.float64, copy=False)
        not_numbers = np.zeros(len(values), dtype=np.bool_)
    else:  # strings, nulls or booleans among the numbers: only the numbers (and "NaN" words) are read
        numbers = np.array([_float_or_nan(value) for value in values], dtype=np.float64)
        not_numbers = np.array([not _is_number(value) for value in values], dtype=np.bool_)
    non_finite = ~np.isfinite(numbers) & ~not_numbers
    with np.errstate(over="ignore"):  # overflow is found just below
        converted = numbers.astype(NUMPY_DTYPES[datatype])
    beyond = np.isfinite(numbers) & ~np.isfinite(converted)
    invalid = not_numbers | non_finite | beyond
    converted[invalid] = 0

    def reason(row: int) -> str:
        if not_numbers[row]:
            value = describe(_python_value(values[row]))
            return f"feature {name!r} is {value}; the model expects {datatype} numbers"
        if non_finite[row]:
            value = describe(float(numbers[row]))
            return f"feature {name!r} is {value}; the model does not accept non-finite values"
        return f"feature {name!r} is {describe(float(numbers[row]))}, beyond the range of {datatype}"

    return converted, invalid, reason


def _integer_values(name: str, values: np.ndarray, datatype: str) -> tuple[np.ndarray, np.ndarray, Reason]:
    limits = np.iinfo(datatype.lower())  # INT8 -> int8, UINT64 -> uint64
    if values.dtype.kind in "iu":
        numbers: np.ndarray = values
        not_whole = np.zeros(len(values), dtype=np.bool_)
    elif values.dtype.kind == "f":
        numbers = values
        not_whole = ~np.isfinite(values) | (values != np.floor(values))
    else:
        numbers = np.array([value if _is_whole(value) else 0 for value in values], dtype=object)
        not_whole = np.array([not _is_whole(value) for value in values], dtype=np.bool_)
    beyond = ~not_whole & ((numbers < limits.min) | (numbers > limits.max))
    invalid = not_whole | beyond
    converted = np.where(invalid, 0, numbers).astype(NUMPY_DTYPES[datatype])

    def reason(row: int) -> str:
        value = describe(_python_value(values[row]))
        if not_whole[row]:
            return f"feature {name!r} is {value}; the model expects {datatype} integers"
        return f"feature {name!r} is {value}, beyond the range of {datatype}"

    return converted, invalid, reason


def _string_values(name: str, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, Reason]:
    if values.dtype.kind in "US":
        return values.astype(object), np.zeros(len(values), dtype=np.bool_), _never
    invalid = np.array([not isinstance(value, str) for value in values], dtype=np.bool_)
    converted = values.astype(object)
    converted[invalid] = ""
    return converted, invalid, _expected(name, values, "strings (BYTES)")


def _bool_values(name: str, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, Reason]:
    if values.dtype.kind == "b":
        return values, np.zeros(len(values), dtype=np.bool_), _never
    invalid = np.array([not isinstance(value, bool | np.bool_) for value in values], dtype=np.bool_)
    converted = np.array([bool(value) and not bad for value, bad in zip(values, invalid, strict=True)])
    return converted, invalid, _expected(name, values, "true or false (BOOL)")


def _expected(name: str, values: np.ndarray, expected: str) -> Reason:
    def reason(row: int) -> str:
        return f"feature {name!r} is {describe(_python_value(values[row]))}; the model expects {expected}"

    return reason


def _never(row: int) -> str:
    raise AssertionError(f"row {row} was valid")


def _is_number(value: Any) -> bool:
    if isinstance(value, str):  # "NaN" and "Infinity" are how JSON writes what it has no literal for
        return value.strip().lower().lstrip("+-") in ("nan", "inf", "infinity")
    numeric = isinstance(value, int | float | np.integer | np.floating)
    return numeric and not isinstance(value, bool | np.bool_)


def _float_or_nan(value: Any) -> float:
    return float(value) if _is_number(value) else math.nan


def _is_whole(value: Any) -> bool:
    if isinstance(value, bool | np.bool_):
        return False
    if isinstance(value, int | np.integer):
        return True
    return isinstance(value, float | np.floating) and math.isfinite(value) and float(value).is_integer()


def _python_value(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
