"""Request and response bodies of the serving API: the Open Inference Protocol (KServe V2) and v1 JSON.

Turns a request body into one numpy array per model input, checked against the model's signature,
and model outputs back into a response body. Knows nothing of HTTP or onnxruntime sessions: callers
map `InvalidInput` to HTTP 422. Rows and instances are counted from 0, like the JSON arrays they
point into.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import simdjson

from shared.events import ModelSignature, TensorSpec
from shared.tensors import (
    DATATYPES_BY_DTYPE,
    READ_AS_DOUBLES,
    InvalidInput,
    Tensors,
    describe,
    exact_doubles,
    instances_to_tensors,
    json_value,
    json_values,
    rows_of_doubles_input,
    to_array,
)

# simdjson's reading of a V2 body costs about 15 µs more than orjson's for a few rows, and saves more from
# about 1.6 KB of body on (20 features: 1 row 38 against 24 µs, 12 rows 44 against 49, 100 rows 88 / 254).
_V2_FAST_READ_MIN_BYTES = 2048


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
    read_fast = None
    if isinstance(body, bytes) and len(body) >= _V2_FAST_READ_MIN_BYTES:
        read_fast = _with_number_data(body, signature)
    request = _json_object(body) if read_fast is None else read_fast
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
        inputs[spec.name] = to_array(
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
                "data": json_values(outputs[name].ravel()),
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


def _flat_data(entry: dict[str, Any], shape: list[int]) -> list[Any] | np.ndarray:
    name, data = entry["name"], entry.get("data")
    if isinstance(data, np.ndarray):  # read by `_with_number_data`: flat already
        values: list[Any] | np.ndarray = data
    elif isinstance(data, list):
        values = _flatten(data)
    else:
        raise InvalidInput(f"input {name!r} needs 'data', a flat or nested list of values")
    if len(values) != math.prod(shape):
        raise InvalidInput(f"input {name!r} shape {shape} needs {math.prod(shape)} values, got {len(values)}")
    return values


def _with_number_data(body: bytes, signature: ModelSignature) -> dict[str, Any] | None:
    """The request as `orjson.loads` reads it, except that the data of each FP32 or FP64 input is read by
    simdjson straight into a flat array of doubles, without a Python object per number (a 100-row,
    20-feature tensor in a third of the time). The general checks then run on it as on any request. None
    when this reading could differ from orjson's (a repeated key, a whole number of 2**53 or more, any
    data that is not all numbers) or there is nothing to gain: the general path then reads the body."""
    numeric = {spec.name for spec in signature.inputs if spec.datatype in READ_AS_DOUBLES}
    if not numeric:
        return None
    try:
        document = simdjson.Parser().parse(body)
        if not isinstance(document, simdjson.Object) or _repeats_a_key(document):
            return None
        request = {key: _python(document[key]) for key in document if key != "inputs"}
        entries = document.get("inputs")
        if not isinstance(entries, simdjson.Array):
            return None
        inputs = [_entry_with_number_data(entry, numeric) for entry in entries]
    except (ValueError, TypeError, RuntimeError):  # not JSON, or not numbers: the general path says what
        return None
    if any(entry is None for entry in inputs):
        return None
    request["inputs"] = inputs
    return request


def _entry_with_number_data(entry: Any, numeric: set[str]) -> dict[str, Any] | None:
    if not isinstance(entry, simdjson.Object) or _repeats_a_key(entry):
        return None
    fields = {key: entry[key] for key in entry}
    data = fields.get("data")
    if fields.get("name") not in numeric or not isinstance(data, simdjson.Array) or not data:
        return {key: _python(value) for key, value in fields.items()}
    values = exact_doubles(data)
    if values is None or not len(values):
        return None
    return {key: values if key == "data" else _python(value) for key, value in fields.items()}


def _repeats_a_key(document: Any) -> bool:
    """simdjson finds a repeated key's first value, orjson keeps its last."""
    keys = list(document.keys())
    return len(keys) != len(set(keys))


def _python(value: Any) -> Any:
    """A simdjson value as the objects `orjson.loads` makes of it."""
    if isinstance(value, simdjson.Object):
        return value.as_dict()
    if isinstance(value, simdjson.Array):
        return value.as_list()
    return value


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
        raise InvalidInput(f"the request 'id' must be a string, got {describe(request_id)}")
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
        raise InvalidInput(f"{owner} 'parameters' must be an object, got {describe(parameters)}")
    return parameters


# ---------------------------------------------------------------- v1 JSON


@dataclass(frozen=True, slots=True)
class V1Instances:
    """A v1 request's inputs, and, when its rows were read straight from the body, their JSON as sent
    (`[..],[..]`, without the enclosing list): the prediction log writes that text as it is instead of
    formatting every number again, which cost more than reading it."""

    inputs: Tensors
    rows_json: bytes | None = None  # a copy: the log's buffer must not hold the whole body


def parse_v1_instances(
    body: bytes | dict[str, Any], signature: ModelSignature, *, allow_non_finite: bool = False
) -> V1Instances:
    """Turn `{"instances": [...]}` into the model's inputs (see `shared.tensors.instances_to_tensors`)."""
    if isinstance(body, bytes) and (read := _number_rows(body, signature)) is not None:
        return read
    instances = _json_object(body).get("instances")
    if not isinstance(instances, list) or not instances:
        raise InvalidInput("the request needs 'instances', a non-empty list")
    return V1Instances(instances_to_tensors(instances, signature, allow_non_finite=allow_non_finite))


def _number_rows(body: bytes, signature: ModelSignature) -> V1Instances | None:
    """The common request read straight into an array: rows of numbers, of the width of the model's one
    2-D FP32 or FP64 input, and no other list in the body. simdjson reads the numbers into a buffer of
    doubles without a Python object per number (a 100-row, 20-feature body in half the time of orjson
    plus numpy). None for anything else, and for anything this reading could get wrong (a nested or
    ragged row, a repeated key, a huge integer, a value beyond the datatype's range): the general path
    then reads it, and accepts the same or names the problem."""
    spec = rows_of_doubles_input(signature)
    if spec is None:
        return None
    try:
        document = simdjson.Parser().parse(body)
        if (
            not isinstance(document, simdjson.Object)
            or (keys := list(document.keys())).count("instances") != 1
        ):
            return None  # of a repeated key the general path keeps the last
        instances = document["instances"]
        if not isinstance(instances, simdjson.Array) or not instances:
            return None
        rows = len(instances)
        # Every "[" is the list's or a row's, so no row holds a list that the flat buffer would hide.
        if body.count(b"[") != rows + 1:
            return None
        values = exact_doubles(instances)
        if values is None:
            return None
        width = len(values) // rows
        if width == 0 or spec.shape[1] not in (-1, width):
            return None
        # len() of a number raises TypeError, so this also says that every instance is a row.
        if set(map(len, instances)) != {width}:  # type: ignore[arg-type]
            return None
    except (ValueError, TypeError, RuntimeError):  # not JSON, or not numbers: the general path says what
        return None
    rows_json = _rows_json(body, instances_last=keys[-1] == "instances")
    if rows_json is not None and len(rows_json) > _MAX_TEXT_BYTES_PER_NUMBER * len(values):
        rows_json = None  # mostly whitespace: held in the log's buffer it would cost more than the arrays
    return V1Instances(
        {spec.name: values.astype(READ_AS_DOUBLES[spec.datatype]).reshape(rows, width)}, rows_json
    )


# The end of `instances`: its last row's "]" and its own. Its rows hold only numbers, so "]" then "]" (with
# nothing but whitespace between) is found nowhere else in it; rows are separated by commas.
_END_OF_ROWS = re.compile(rb"\]\s*\]")
# A number written in full (17 digits, sign, point, exponent) and its separator fit in 32 bytes.
_MAX_TEXT_BYTES_PER_NUMBER = 32


def _rows_json(body: bytes, *, instances_last: bool) -> bytes | None:
    """The text of the rows of a body `_number_rows` read: from after the first "[" (every "[" of the body
    is `instances`' or a row's) to the end of `instances`, which is the body's last "]" when `instances` is
    its last member (the usual body, found from the end at once), else where `_END_OF_ROWS` finds it."""
    start = body.index(b"[")
    if instances_last:
        return body[start + 1 : body.rindex(b"]")]
    end = _END_OF_ROWS.search(body, start)
    return None if end is None else body[start + 1 : end.start() + 1]


def encode_v1_predictions(outputs: Tensors, class_labels: list[Any] | None = None) -> dict[str, Any]:
    """`{"predictions": [...]}` with one entry per row.

    A classifier's entry is `{"label": ..., "probabilities": [...]}`, the probabilities in the order of
    `class_labels`, which is returned once as `"class_labels"` when given. A regressor's entry is its
    value. Any other model's entry is an object with each output's row.
    """
    if "label" in outputs:
        labels = json_values(outputs["label"].ravel())
        probabilities = outputs.get("probabilities")
        if probabilities is None:
            predictions: list[Any] = [{"label": label} for label in labels]
        else:
            per_row = json_values(probabilities)
            predictions = [
                {"label": label, "probabilities": row} for label, row in zip(labels, per_row, strict=True)
            ]
    elif "variable" in outputs:
        predictions = json_values(outputs["variable"].ravel())
    else:
        rows = len(next(iter(outputs.values()))) if outputs else 0
        predictions = [
            {name: json_value(array[row]) for name, array in outputs.items()} for row in range(rows)
        ]
    response: dict[str, Any] = {"predictions": predictions}
    if class_labels is not None:
        response["class_labels"] = class_labels
    return response


# ---------------------------------------------------------------- values


def _json_object(body: bytes | dict[str, Any]) -> dict[str, Any]:
    if isinstance(body, bytes | bytearray | memoryview):
        try:
            body = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            raise InvalidInput(f"the request body is not valid JSON: {error}") from error
    if not isinstance(body, dict):
        raise InvalidInput(f"the request body must be a JSON object, got {describe(body)}")
    return body


def _datatype_of(array: np.ndarray) -> str:
    return DATATYPES_BY_DTYPE.get(array.dtype, "BYTES")
