"""Writing `prediction-logged` events from whole arrays: serving logs every answer and batch a sample of
what it scores, both at rates where building a record per row would cost more than the prediction."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import orjson

from shared.bus import MAX_RECORD_BYTES
from shared.events import CloudEvent, PredictionLogged
from shared.tensors import Tensors


def logged_request(
    request_id: str, rows: int, latency_ms: float, timestamp: datetime, first_row: int = 0
) -> dict[str, Any]:
    """One `LoggedRequest`, JSON-ready: `rows` rows from `first_row` of the request `request_id`."""
    return {
        "request_id": request_id,
        "rows": rows,
        "first_row": first_row,
        "latency_ms": latency_ms,
        "timestamp": timestamp,
    }


def prediction_logged_json(
    *,
    model: str,
    version: int,
    requests: list[dict[str, Any]],
    inputs: Tensors,
    outputs: Tensors,
    source: str,
    alias: str | None = None,
    shadow: bool = False,
    rows_json: Sequence[bytes] | None = None,
) -> bytes:
    """One columnar `PredictionLogged` event (JSON) for the rows of `requests`, in order, whose model
    inputs and outputs are `inputs` and `outputs` (rows first). The arrays are written by orjson in C.
    One input per feature (each of shape [rows, 1]) gives named feature columns; otherwise the first
    input's rows, flattened, are the features. `rows_json`: for a model of one input, each request's rows
    as its JSON sent them (`[..],[..]`), written as they are instead of formatting every number of the
    input again (the numbers as the caller wrote them, rather than as the model's datatype holds them)."""
    features: dict[str, Any] | Any
    if all(array.ndim == 2 and array.shape[1] == 1 for array in inputs.values()):
        features = {name: _json_ready(array[:, 0]) for name, array in inputs.items()}
    elif rows_json is not None and len(inputs) == 1:
        features = orjson.Fragment(b"[" + b",".join(rows_json) + b"]")
    else:
        first = next(iter(inputs.values()))
        features = _json_ready(first.reshape(len(first), -1))
    data = {
        "model": model,
        "version": version,
        "alias": alias,
        "shadow": shadow,
        "requests": requests,
        "features": features,
        "outputs": {name: _json_ready(array) for name, array in outputs.items()},
    }
    return CloudEvent.unchecked_json(PredictionLogged, data, source=source, subject=model)


def _json_ready(array: np.ndarray) -> Any:
    """What orjson writes fastest: a C-contiguous numeric array as is; strings and objects as lists."""
    if array.dtype.kind in "biuf" and array.dtype.itemsize <= 8:
        return np.ascontiguousarray(array)
    return array.tolist()


def events_that_fit(
    encode: Callable[[slice], bytes], rows: slice, max_bytes: int = MAX_RECORD_BYTES
) -> Iterator[tuple[slice, bytes]]:
    """The events `encode(part)` writes for the `rows` (a slice with start and stop), in row order: one for
    them all, or, where one is larger than a Kafka record may be (a wide model's rows), one for each half,
    halved again until each fits. A single row too large alone is left out: the caller sees it missing."""
    pending = [rows] if rows.stop > rows.start else []
    while pending:
        part = pending.pop(0)
        event = encode(part)
        if len(event) <= max_bytes:
            yield part, event
        elif part.stop - part.start > 1:
            middle = (part.start + part.stop) // 2
            pending[0:0] = [slice(part.start, middle), slice(middle, part.stop)]
