"""Request and response bodies of the serving API: the Open Inference Protocol (KServe V2) and v1 JSON.

Turns a request body into one numpy array per model input, checked against the model's signature,
and model outputs back into a response body. Knows nothing of HTTP or onnxruntime sessions: callers
map `InvalidInput` to HTTP 422. Rows and instances are counted from 0, like the JSON arrays they
point into.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

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
_DATATYPES_BY_DTYPE = {np.dtype(dtype): name for name, dtype in NUMPY_DTYPES.items() if name != "BYTES"}
_FLOAT_DATATYPES = {"FP16", "FP32", "FP64"}
_NON_FINITE_WORDS = {"nan", "inf", "infinity"}


class InvalidInput(ValueError):
    """A request body that does not fit the model; the message says what was expected and what came."""


@dataclass(frozen=True)
class V2RequestMeta:
    """What a V2 request asks for besides its inputs."""

    request_id: str | None = None
    requested_outputs: list[str] | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- Open Inference Protocol (V2)


def parse_v2_request(
    body: bytes | dict[str, Any], signature: ModelSignature, *, allow_non_finite: bool = False
) -> tuple[Tensors, V2RequestMeta]:
    """Check a V2 inference request against `signature`; return its inputs as arrays and its metadata."""
    request = _json_object(body)
    entries = request.get("inputs")
    if not isinstance(entries, list) or not entries:
        raise InvalidInput("the request needs 'inputs', a non-empty list of tensors")
    entries_by_name = _entries_by_name(entries, signature)

    inputs: Tensors = {}
    rows_by_input: dict[str, int] = {}
    for spec in signature.inputs:
        entry = entries_by_name[spec.name]
        shape = _checked_shape(entry, spec)
        if shape:
            rows_by_input[spec.name] = shape[0]
        inputs[spec.name] = _to_array(
            spec.name, _flat_data(entry, shape), spec.datatype, shape, allow_non_finite
        )
    _check_same_rows(rows_by_input)

    return inputs, V2RequestMeta(
        request_id=_request_id(request),
        requested_outputs=_requested_outputs(request, signature),
        parameters=_parameters(request.get("parameters"), "the request"),
    )


def encode_v2_response(
    model_name: str,
    model_version: str,
    outputs: Tensors,
    signature: ModelSignature,
    request_id: str,
    requested_outputs: list[str] | None,
) -> dict[str, Any]:
    """A V2 inference response: the requested outputs (all by default) in the signature's order."""
    if requested_outputs is None:
        declared = [spec.name for spec in signature.outputs if spec.name in outputs]
        names = declared + [name for name in outputs if name not in declared]
    else:
        names = requested_outputs
    return {
        "model_name": model_name,
        "model_version": model_version,
        "id": request_id,
        "outputs": [
            {
                "name": name,
                "datatype": _datatype_of(outputs[name]),
                "shape": list(outputs[name].shape),
                "data": _json_values(outputs[name].ravel()),
            }
            for name in names
        ],
    }


def _entries_by_name(entries: list[Any], signature: ModelSignature) -> dict[str, dict[str, Any]]:
    known = [spec.name for spec in signature.inputs]
    by_name: dict[str, dict[str, Any]] = {}
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise InvalidInput(f"inputs[{position}] needs a 'name', 'shape', 'datatype' and 'data'")
        name = entry["name"]
        if name not in known:
            raise InvalidInput(f"unknown input {name!r}; the model's inputs are {', '.join(known)}")
        if name in by_name:
            raise InvalidInput(f"input {name!r} is sent more than once")
        by_name[name] = entry
    for name in known:
        if name not in by_name:
            raise InvalidInput(f"input {name!r} is missing; the model's inputs are {', '.join(known)}")
    return by_name


def _checked_shape(entry: dict[str, Any], spec: TensorSpec) -> list[int]:
    datatype = entry.get("datatype")
    if datatype != spec.datatype:
        raise InvalidInput(f"input {spec.name!r} has datatype {datatype}; the model expects {spec.datatype}")
    if "binary_data_size" in _parameters(entry.get("parameters"), f"input {spec.name!r}"):
        raise InvalidInput(f"input {spec.name!r} uses binary data; send tensor data as JSON")
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0 for dim in shape
    ):
        raise InvalidInput(f"input {spec.name!r} needs a 'shape', a list of non-negative integers")
    fits = len(shape) == len(spec.shape) and all(
        expected in (-1, sent) for sent, expected in zip(shape, spec.shape, strict=True)
    )
    if not fits:
        raise InvalidInput(f"input {spec.name!r} has shape {shape}; the model expects {spec.shape}")
    return shape


def _flat_data(entry: dict[str, Any], shape: list[int]) -> list[Any]:
    name, data = entry["name"], entry.get("data")
    if not isinstance(data, list):
        raise InvalidInput(f"input {name!r} needs 'data', a flat or nested list of values")
    values = _flatten(data)
    if len(values) != math.prod(shape):
        raise InvalidInput(f"input {name!r} shape {shape} needs {math.prod(shape)} values, got {len(values)}")
    return values


def _flatten(data: list[Any]) -> list[Any]:
    if not any(isinstance(value, list) for value in data):
        return data  # the common case: already flat, no copy
    flat: list[Any] = []
    for value in data:
        flat.extend(_flatten(value) if isinstance(value, list) else [value])
    return flat


def _check_same_rows(rows_by_input: dict[str, int]) -> None:
    if len(set(rows_by_input.values())) > 1:
        (first, first_rows), *others = rows_by_input.items()
        name, rows = next((name, rows) for name, rows in others if rows != first_rows)
        raise InvalidInput(f"input {name!r} has {rows} rows; input {first!r} has {first_rows}")


def _request_id(request: dict[str, Any]) -> str | None:
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput(f"the request 'id' must be a string, got {_describe(request_id)}")
    return request_id


def _requested_outputs(request: dict[str, Any], signature: ModelSignature) -> list[str] | None:
    entries = request.get("outputs")
    if entries is None:
        return None
    known = [spec.name for spec in signature.outputs]
    if not isinstance(entries, list) or not all(
        isinstance(entry, dict) and isinstance(entry.get("name"), str) for entry in entries
    ):
        raise InvalidInput("the request 'outputs' must be a list of objects with a 'name'")
    names = [entry["name"] for entry in entries]
    for name in names:
        if name not in known:
            raise InvalidInput(f"unknown output {name!r}; the model's outputs are {', '.join(known)}")
    return names


def _parameters(parameters: Any, owner: str) -> dict[str, Any]:
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise InvalidInput(f"{owner} 'parameters' must be an object, got {_describe(parameters)}")
    return parameters


# ---------------------------------------------------------------- v1 JSON


def parse_v1_instances(
    body: bytes | dict[str, Any], signature: ModelSignature, *, allow_non_finite: bool = False
) -> Tensors:
    """Turn `{"instances": [...]}` into the model's inputs.

    For a model with one [-1, 1] input per feature, an instance is a list of feature values in the
    signature's order, or an object with one scalar per input name. For a model with a single
    [-1, n] input, an instance is a list of its n values. All instances of a request take one form.
    """
    instances = _json_object(body).get("instances")
    if not isinstance(instances, list) or not instances:
        raise InvalidInput("the request needs 'instances', a non-empty list")
    names = [spec.name for spec in signature.inputs]
    if all(len(spec.shape) == 2 and spec.shape[1] == 1 for spec in signature.inputs):
        columns = _feature_columns(instances, names)
        return {
            spec.name: _to_array(spec.name, column, spec.datatype, [len(instances), 1], allow_non_finite)
            for spec, column in zip(signature.inputs, columns, strict=True)
        }
    if len(signature.inputs) == 1 and len(signature.inputs[0].shape) == 2:
        spec = signature.inputs[0]
        matrix = _number_matrix(instances)  # the common case, read by numpy in one call
        if matrix is not None and spec.shape[1] in (-1, matrix.shape[1]):
            return {
                spec.name: _to_array(
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
            spec.name: _to_array(spec.name, values, spec.datatype, [len(instances), width], allow_non_finite)
        }
    shapes = ", ".join(f"{spec.name} {spec.shape}" for spec in signature.inputs)
    raise InvalidInput(f"this model's inputs ({shapes}) cannot be sent as v1 instances; use the V2 protocol")


def encode_v1_predictions(outputs: Tensors, class_labels: list[Any] | None = None) -> dict[str, Any]:
    """`{"predictions": [...]}` with one entry per row.

    A classifier's entry is `{"label": ..., "probabilities": [...]}`, the probabilities in the order of
    `class_labels`, which is returned once as `"class_labels"` when given. A regressor's entry is its
    value. Any other model's entry is an object with each output's row.
    """
    if "label" in outputs:
        labels = _json_values(outputs["label"].ravel())
        probabilities = outputs.get("probabilities")
        if probabilities is None:
            predictions: list[Any] = [{"label": label} for label in labels]
        else:
            per_row = _json_values(probabilities)
            predictions = [
                {"label": label, "probabilities": row} for label, row in zip(labels, per_row, strict=True)
            ]
    elif "variable" in outputs:
        predictions = _json_values(outputs["variable"].ravel())
    else:
        rows = len(next(iter(outputs.values()))) if outputs else 0
        predictions = [
            {name: _json_value(array[row]) for name, array in outputs.items()} for row in range(rows)
        ]
    response: dict[str, Any] = {"predictions": predictions}
    if class_labels is not None:
        response["class_labels"] = class_labels
    return response


def _feature_columns(instances: list[Any], names: list[str]) -> list[list[Any]]:
    """One list of values per input name, whichever form the instances take."""
    columns: list[list[Any]] = [[] for _ in names]
    form = type(instances[0])
    for position, instance in enumerate(instances):
        if not isinstance(instance, form):
            raise InvalidInput(
                f"instance {position} is {_describe(instance)} but instance 0 is {_describe(instances[0])}; "
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
        raise InvalidInput(f"instance {position} is {_describe(instance)}; expected a list or an object")
    return len(instance)


# ---------------------------------------------------------------- values


def _json_object(body: bytes | dict[str, Any]) -> dict[str, Any]:
    if isinstance(body, bytes | bytearray | memoryview):
        try:
            body = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            raise InvalidInput(f"the request body is not valid JSON: {error}") from error
    if not isinstance(body, dict):
        raise InvalidInput(f"the request body must be a JSON object, got {_describe(body)}")
    return body


def _to_array(
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
                f"input {name!r} row {index // row_width} is {_describe(value)}; the model expects {expected}"
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
    return index // row_width, _describe(numbers[index].item() if numbers.dtype != object else numbers[index])


def _describe(value: Any) -> str:
    """A value as a person reading the JSON would write it."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, str) and value.strip().lower().lstrip("+-") in _NON_FINITE_WORDS:
        return _describe(float(value))
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return orjson.dumps(value).decode() if value is None or isinstance(value, bool | str) else repr(value)


def _datatype_of(array: np.ndarray) -> str:
    return _DATATYPES_BY_DTYPE.get(array.dtype, "BYTES")


def _json_values(array: np.ndarray) -> list[Any]:
    if array.dtype.kind in "OSU":
        return [_json_value(value) for value in array]
    return list(array.tolist())


def _json_value(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return _json_values(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value.item() if isinstance(value, np.generic) else value
