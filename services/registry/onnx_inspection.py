"""Prove an uploaded ONNX file is a model the platform can serve, and read its signature from the graph.

The bytes are only ever parsed as protobuf (by onnxruntime, and by `onnx` to look for external
data); nothing is unpickled, so an uploaded file cannot run code in the registry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from shared.events import ModelSignature, TensorSpec

# onnxruntime's type string -> Open Inference Protocol (KServe V2) datatype. Element types with no
# KServe name (bfloat16, complex, float8, int4) are left out, so such models are rejected.
KSERVE_DATATYPES: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

# KServe datatype -> the numpy dtype onnxruntime expects; string tensors are object arrays of str.
NUMPY_DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}

DYNAMIC_DIMENSION = -1

ZIPMAP_HINT = (
    'convert the classifier with zipmap disabled: options={id(estimator): {"zipmap": False}}, '
    'or options={"zipmap": False} for the whole pipeline'
)


class InvalidModel(ValueError):
    """The bytes are not a model the platform can serve; the message says why, for a 400 response."""


def inspect_model(model: bytes | Path, sample: dict[str, list[Any]] | None = None) -> ModelSignature:
    """Load `model` (its bytes, or the file an upload was spooled to) in onnxruntime, read its signature and
    run it once on `sample` or on synthesised zeros.

    `sample` maps every input name to a batch of rows, e.g. {"income": [[1.0]], "city": [["paris"]]}.
    Raises InvalidModel saying what is wrong when the model cannot be loaded, described or run.
    """
    session = _load_session(model)
    _reject_external_data(model)
    signature = ModelSignature(
        inputs=[_tensor_spec(arg, "input") for arg in session.get_inputs()],
        outputs=[_tensor_spec(arg, "output") for arg in session.get_outputs()],
    )
    feed = (
        _sample_feed(signature.inputs, sample) if sample is not None else _synthesised_feed(signature.inputs)
    )
    _smoke_inference(session, feed, expected_outputs=len(signature.outputs))
    return signature


def _load_session(model: bytes | Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    # The registry inspects uploads inside a web service: one thread each, so one upload cannot
    # take every core from the requests being served next to it.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    try:
        source = str(model) if isinstance(model, Path) else model
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own unrelated types for each way bytes are bad
        raise InvalidModel(f"model does not load in onnxruntime: {_first_line(error)}") from error


def _reject_external_data(model: bytes | Path) -> None:
    # A model resolves external-data paths against the working directory (bytes) or its own (a file), so an
    # upload could pull another file into its weights, and serve it back.
    parsed = (
        onnx.load_model(str(model), load_external_data=False)
        if isinstance(model, Path)
        else onnx.load_model_from_string(model)
    )
    locations = sorted(set(_external_data_locations(parsed)))
    if locations:
        raise InvalidModel(
            f"model keeps tensors in external data files {locations}; upload a self-contained model "
            "(onnx.save_model(model, path, save_as_external_data=False))"
        )


def _external_data_locations(message: Any) -> list[str]:
    """Where tensors anywhere in the protobuf `message` (subgraphs, functions, attributes) keep their data."""
    locations: list[str] = []
    if isinstance(message, onnx.TensorProto) and message.data_location == onnx.TensorProto.EXTERNAL:
        locations.extend(entry.value for entry in message.external_data if entry.key == "location")
    for field, value in message.ListFields():
        if field.type == field.TYPE_MESSAGE:
            for child in value if field.is_repeated else [value]:
                locations.extend(_external_data_locations(child))
    return locations


def _tensor_spec(arg: Any, role: str) -> TensorSpec:
    datatype = KSERVE_DATATYPES.get(arg.type)
    if datatype is None:
        raise InvalidModel(_unservable_type_message(arg.name, arg.type, role))
    shape = [dim if isinstance(dim, int) and dim >= 0 else DYNAMIC_DIMENSION for dim in arg.shape]
    return TensorSpec(name=arg.name, datatype=datatype, shape=shape)


def _unservable_type_message(name: str, onnx_type: str, role: str) -> str:
    if not onnx_type.startswith("tensor("):
        message = f"{role} {name!r} is {onnx_type}, not a tensor; the platform serves tensors only"
        # skl2onnx classifiers emit their probabilities as a list of dicts through ZipMap by default.
        return f"{message}; {ZIPMAP_HINT}" if onnx_type.startswith("seq(map(") else message
    return (
        f"{role} {name!r} is {onnx_type}, which has no Open Inference Protocol datatype; "
        f"supported: {', '.join(KSERVE_DATATYPES)}"
    )


def _synthesised_feed(inputs: list[TensorSpec]) -> dict[str, np.ndarray]:
    """One row per input: zeros, False or "" in the declared shape, each dynamic dimension being 1."""
    feed = {}
    for spec in inputs:
        shape = tuple(1 if dim == DYNAMIC_DIMENSION else dim for dim in spec.shape)
        if spec.datatype == "BYTES":
            feed[spec.name] = np.full(shape, "", dtype=object)
        else:
            feed[spec.name] = np.zeros(shape, dtype=NUMPY_DTYPES[spec.datatype])
    return feed


def _sample_feed(inputs: list[TensorSpec], sample: dict[str, list[Any]]) -> dict[str, np.ndarray]:
    """The caller's rows as arrays of each input's dtype."""
    declared = {spec.name: spec for spec in inputs}
    unknown = sorted(set(sample) - set(declared))
    if unknown:
        raise InvalidModel(
            f"sample has inputs {unknown} the model does not declare; inputs: {sorted(declared)}"
        )
    missing = sorted(set(declared) - set(sample))
    if missing:
        raise InvalidModel(f"sample lacks inputs {missing} the model declares")
    return {name: _sample_array(declared[name], rows) for name, rows in sample.items()}


def _sample_array(spec: TensorSpec, rows: list[Any]) -> np.ndarray:
    try:
        array = np.asarray(rows, dtype=NUMPY_DTYPES[spec.datatype])
    except (ValueError, TypeError, OverflowError) as error:
        raise InvalidModel(
            f"sample for input {spec.name!r} does not convert to {spec.datatype}: {_first_line(error)}"
        ) from error
    # An object array accepts anything, so BYTES values are checked one by one.
    if spec.datatype == "BYTES" and not all(isinstance(value, str) for value in array.flat):
        raise InvalidModel(f"sample for input {spec.name!r} must hold strings (BYTES)")
    return array


def _smoke_inference(
    session: ort.InferenceSession, feed: dict[str, np.ndarray], expected_outputs: int
) -> None:
    try:
        outputs = session.run(None, feed)
    except Exception as error:  # onnxruntime's failures share no base class worth naming
        raise InvalidModel(f"smoke inference failed: {_first_line(error)}") from error
    if len(outputs) != expected_outputs:
        raise InvalidModel(
            f"smoke inference returned {len(outputs)} outputs, the graph declares {expected_outputs}"
        )


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
