"""Model inputs from JSON values: rows of features ("instances") or flat tensor data, checked against a
model's signature and turned into one numpy array per input; and outputs back into JSON values.

Knows nothing of HTTP, Kafka or onnxruntime sessions: callers map `InvalidInput` to a 422 or a dead
letter. Rows and instances are counted from 0, like the JSON arrays they point into.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import simdjson

from shared.events import ModelSignature, TensorSpec

Tensors = dict[str, np.ndarray]

NUMPY_DTYPES: dict[str, type[np.generic]] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,  # onnxruntime takes string tensors as object arrays of str
}
DATATYPES_BY_DTYPE = {np.dtype(dtype): name for name, dtype in NUMPY_DTYPES.items() if name != "BYTES"}
_FLOAT_DATATYPES = {"FP16", "FP32", "FP64"}
# The datatypes whose arrays come out the same from JSON numbers read straight into doubles (`exact_doubles`)
# as from the Python numbers JSON gives: below 2**53 a whole number is exact as a double, and FP32's range
# holds every such number, so no error message could differ either.
READ_AS_DOUBLES: dict[str, type[np.floating]] = {"FP32": np.float32, "FP64": np.float64}
_EXACT_IN_DOUBLE = 2.0**53
_NON_FINITE_WORDS = {"nan", "inf", "infinity"}


class InvalidInput(ValueError):
    """Inputs that do not fit the model; the message says what was expected and what came."""


def instances_to_tensors(
    instances: list[Any], signature: ModelSignature, *, allow_non_finite: bool = False
) -> Tensors:
    """Turn instances (rows of features) into the model's inputs.

    For a model with one [-1, 1] input per feature, an instance is a list of feature values in the
    signature's order, or an object with one scalar per input name. For a model with a single
    [-1, n] input, an instance is a list of its n values. All instances of a request take one form.
    """
    if not instances:
        raise InvalidInput("there are no instances")
    names = [spec.name for spec in signature.inputs]
    if all(len(spec.shape) == 2 and spec.shape[1] == 1 for spec in signature.inputs):
        columns = _feature_columns(instances, names)
        return {
            spec.name: to_array(spec.name, column, spec.datatype, [len(instances), 1], allow_non_finite)
            for spec, column in zip(signature.inputs, columns, strict=True)
        }
    if len(signature.inputs) == 1 and len(signature.inputs[0].shape) == 2:
        spec = signature.inputs[0]
        matrix = _number_matrix(instances)  # the common case, read by numpy in one call
        if matrix is not None and spec.shape[1] in (-1, matrix.shape[1]):
            return {
                spec.name: to_array(
                    spec.name, matrix.ravel(), spec.datatype, list(matrix.shape), allow_non_finite
                )
            }
        width = spec.shape[1] if spec.shape[1] != -1 else _instance_length(instances[0], 0)
        values: list[Any] = []
        for position, instance in enumerate(instances):
            if _instance_length(instance, position) != width:
                raise InvalidInput(
                    f"instance {position} has {len(instance)} values; "
                    f"the model expects {width} (input {spec.name!r})"
                )
            values.extend(instance)
        return {
            spec.name: to_array(spec.name, values, spec.datatype, [len(instances), width], allow_non_finite)
        }
    shapes = ", ".join(f"{spec.name} {spec.shape}" for spec in signature.inputs)
    raise InvalidInput(
        f"this model's inputs ({shapes}) cannot be given as instances (rows of feature values); send tensors"
    )


def _feature_columns(instances: list[Any], names: list[str]) -> list[list[Any]]:
    """One list of values per input name, whichever form the instances take."""
    columns: list[list[Any]] = [[] for _ in names]
    form = type(instances[0])
    for position, instance in enumerate(instances):
        if not isinstance(instance, form):
            raise InvalidInput(
                f"instance {position} is {describe(instance)} but instance 0 is {describe(instances[0])}; "
                "send every instance in one form"
            )
        if isinstance(instance, dict):
            _check_feature_names(instance, names, position)
            row = [instance[name] for name in names]
        elif _instance_length(instance, position) == len(names):
            row = instance
        else:
            raise InvalidInput(
                f"instance {position} has {len(instance)} features; "
                f"the model expects {len(names)} ({', '.join(names)})"
            )
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    return columns


def _check_feature_names(instance: dict[str, Any], names: list[str], position: int) -> None:
    for key in instance:
        if key not in names:
            raise InvalidInput(
                f"instance {position} has unknown feature {key!r}; the model's inputs are {', '.join(names)}"
            )
    for name in names:
        if name not in instance:
            raise InvalidInput(
                f"instance {position} is missing feature {name!r}; the model's inputs are {', '.join(names)}"
            )


def _instance_length(instance: Any, position: int) -> int:
    if not isinstance(instance, list):
        raise InvalidInput(f"instance {position} is {describe(instance)}; expected a list or an object")
    return len(instance)


def to_array(
    name: str, values: list[Any] | np.ndarray, datatype: str, shape: list[int], allow_non_finite: bool
) -> np.ndarray:
    """`values` (flat, row-major) as an array of `datatype` and `shape`, or InvalidInput naming the row."""
    row_width = math.prod(shape[1:]) or 1
    if len(values) == 0:
        return np.empty(shape, dtype=NUMPY_DTYPES[datatype])
    if datatype == "BYTES":
        _check_each(name, values, row_width, lambda value: isinstance(value, str), "strings (BYTES)")
        return np.array(values, dtype=object).reshape(shape)
    if datatype == "BOOL":
        _check_each(name, values, row_width, lambda value: isinstance(value, bool), "true or false (BOOL)")
        return np.array(values, dtype=np.bool_).reshape(shape)
    if datatype in _FLOAT_DATATYPES:
        numbers = _number_array(values)
        if numbers is None:  # strings, nulls or lists among the numbers: find which, or read "NaN"
            _check_each(name, values, row_width, _is_float_like, f"{datatype} numbers")
            numbers = np.array([float(value) for value in values], dtype=np.float64)
        if not allow_non_finite:
            _check_finite(name, numbers, row_width)
        with np.errstate(over="ignore"):  # overflow is reported just below, naming the row
            converted = numbers.astype(NUMPY_DTYPES[datatype])
        _check_in_range(name, np.isfinite(numbers) & ~np.isfinite(converted), numbers, row_width, datatype)
        return converted.reshape(shape)
    numbers = _number_array(values)
    if numbers is None:
        _check_each(name, values, row_width, _is_integer, f"{datatype} integers")
        numbers = np.array(values, dtype=object)  # whole numbers too large for int64 or uint64
    if numbers.dtype.kind == "f":
        not_whole = ~np.isfinite(numbers) | (numbers != np.floor(numbers))
        if not_whole.any():
            row, value = _first(not_whole, numbers, row_width)
            raise InvalidInput(f"input {name!r} row {row} is {value}; the model expects {datatype} integers")
        # exact Python ints: a float64 near the top of int64 or uint64 would round past the limit
        numbers = np.array([int(value) for value in values], dtype=object)
    limits = np.iinfo(datatype.lower())  # INT8 -> int8, UINT64 -> uint64
    _check_in_range(name, (numbers < limits.min) | (numbers > limits.max), numbers, row_width, datatype)
    return numbers.astype(NUMPY_DTYPES[datatype]).reshape(shape)


def rows_of_doubles_input(signature: ModelSignature) -> TensorSpec | None:
    """The model's input when it is its only one, 2-D and FP32 or FP64: rows of JSON numbers read straight
    into doubles (`exact_doubles`) feed it exactly as the numbers JSON gives would."""
    spec = signature.inputs[0] if len(signature.inputs) == 1 else None
    if spec is None or spec.datatype not in READ_AS_DOUBLES or len(spec.shape) != 2:
        return None
    return spec


def exact_doubles(array: simdjson.Array) -> np.ndarray | None:
    """A simdjson array's numbers, nested lists flattened, as doubles (TypeError when one is not a number);
    None when one is a whole number of 2**53 or more, which JSON gives as an integer that rounds
    differently."""
    values = np.frombuffer(array.as_buffer(of_type="d"), dtype=np.float64)
    if len(values) and np.abs(values).max() >= _EXACT_IN_DOUBLE:
        return None
    return values


def _number_matrix(rows: list[Any]) -> np.ndarray | None:
    """Rows of numbers of one length as a 2-D array; None for anything else (then checked row by row)."""
    try:
        matrix = np.asarray(rows)
    except (ValueError, OverflowError):
        return None
    return matrix if matrix.dtype.kind in "iuf" and matrix.ndim == 2 else None


def _number_array(values: list[Any] | np.ndarray) -> np.ndarray | None:
    """The values as one numeric array when numpy can read them so; None for anything else."""
    try:
        numbers = np.asarray(values)
    except (ValueError, OverflowError):
        return None
    return numbers if numbers.dtype.kind in "iuf" and numbers.ndim == 1 else None


def _is_float_like(value: Any) -> bool:
    if isinstance(value, str):  # clients send "NaN" and "Infinity" because JSON has no such literals
        return value.strip().lower().lstrip("+-") in _NON_FINITE_WORDS
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_each(
    name: str, values: list[Any] | np.ndarray, row_width: int, accepts: Callable[[Any], bool], expected: str
) -> None:
    for index, value in enumerate(values):
        if not accepts(value):
            raise InvalidInput(
                f"input {name!r} row {index // row_width} is {describe(value)}; the model expects {expected}"
            )


def _check_finite(name: str, numbers: np.ndarray, row_width: int) -> None:
    non_finite = ~np.isfinite(numbers)
    if non_finite.any():
        row, value = _first(non_finite, numbers, row_width)
        raise InvalidInput(
            f"input {name!r} row {row} is {value}; the model does not accept non-finite values"
        )


def _check_in_range(
    name: str, outside: np.ndarray, numbers: np.ndarray, row_width: int, datatype: str
) -> None:
    if outside.any():
        row, value = _first(outside, numbers, row_width)
        raise InvalidInput(f"input {name!r} row {row} is {value}, beyond the range of {datatype}")


def _first(mask: np.ndarray, numbers: np.ndarray, row_width: int) -> tuple[int, str]:
    index = int(np.flatnonzero(mask)[0])
    return index // row_width, describe(numbers[index].item() if numbers.dtype != object else numbers[index])


def describe(value: Any) -> str:
    """A value as a person reading the JSON would write it."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, str) and value.strip().lower().lstrip("+-") in _NON_FINITE_WORDS:
        return describe(float(value))
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return orjson.dumps(value).decode() if value is None or isinstance(value, bool | str) else repr(value)


def json_values(array: np.ndarray) -> list[Any]:
    if array.dtype.kind in "OSU":
        return [json_value(value) for value in array]
    return list(array.tolist())


def json_value(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return json_values(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value.item() if isinstance(value, np.generic) else value
