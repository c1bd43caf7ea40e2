"""Scoring requests as producers send them to a request topic, and the results written back.

A request record's key is the caller's entity id, echoed as the result's key. Its value is JSON, one of:

- `{"features": <features>, "model": "credit", "version": 3 | "alias": "canary", "request_id": "..."}`
  (everything but `features` optional, falling back to the topic's defaults);
- bare `<features>`, scored by the topic's default model.

Features are a list of values in the model's input order, or an object of named features. A result's
value is `{"key", "request_id", "model", "version", "outputs", "source": {"topic", "partition", "offset"}}`
with CloudEvents binary-mode headers (`ce_type: io.flywheel.scoring.result.v1`, `ce_id` made of the
source topic, partition and offset, so a consumer can spot a duplicate if it ever sees one).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from services.batch.scoring import ModelRef
from services.batch.settings import RequestTopic
from shared.tensors import Tensors, json_values

RESULT_EVENT_TYPE = b"io.flywheel.scoring.result.v1"
RESULT_SOURCE = b"/flywheel/batch"


class InvalidRequest(ValueError):
    """A record that cannot be a scoring request; the message says why (it goes to the dead letters)."""


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs a microsecond per record
class ScoringRequest:
    topic: str  # the request topic's plain name (without a namespace)
    partition: int
    offset: int
    key: bytes | None
    value: bytes  # as sent: a dead letter keeps it whole
    model: ModelRef
    features: list[Any] | dict[str, Any]
    request_id: str | None  # as the record names it; None: `<topic>-<partition>-<offset>` stands for it

    @property
    def source_id(self) -> str:
        """Where the record came from: its result's id, and its request id when it names none."""
        return f"{self.topic}-{self.partition}-{self.offset}"


def parse_request(
    topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None, defaults: RequestTopic
) -> ScoringRequest:
    """The request a record holds; InvalidRequest names what is wrong with it."""
    try:
        body = orjson.loads(value or b"")
    except orjson.JSONDecodeError as error:
        raise InvalidRequest(f"the value is not JSON: {error}") from error
    envelope = body if isinstance(body, dict) and "features" in body else {"features": body}
    features = envelope["features"]
    if not isinstance(features, list | dict):
        raise InvalidRequest("'features' must be a list of values or an object of named features")
    model = envelope.get("model", defaults.model)
    if not isinstance(model, str) or not model:
        raise InvalidRequest(f"the record names no model and topic {topic!r} has no default model")
    version = envelope.get("version")
    alias = envelope.get("alias")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool) or version < 1):
        raise InvalidRequest(f"'version' must be a whole number from 1, got {version!r}")
    if alias is not None and (not isinstance(alias, str) or not alias):
        raise InvalidRequest(f"'alias' must be a name, got {alias!r}")
    if version is None and alias is None and model == defaults.model:
        version = defaults.version
    request_id = envelope.get("request_id")
    if request_id is not None and (not isinstance(request_id, str) or not 0 < len(request_id) <= 256):
        raise InvalidRequest("'request_id' must be a string of 1 to 256 characters")
    return ScoringRequest(
        topic,
        partition,
        offset,
        key,
        value or b"",
        _model_ref(model, version, alias or defaults.alias),
        features,
        request_id,
    )


@functools.lru_cache(maxsize=4096)
def _model_ref(name: str, version: int | None, alias: str) -> ModelRef:
    """One ModelRef per distinct reference: records of a batch name the same few models."""
    return ModelRef(name, version, alias)


def result_values(
    model: str, version: int, requests: Sequence[ScoringRequest], outputs: Tensors
) -> list[tuple[bytes, bytes]]:
    """Each request's result value and its id (`ce_id`: the source's topic, partition and offset, also the
    request id of a record that names none), in order; `outputs` has a row per request.

    The value is `orjson.dumps` of `{"key", "request_id", "model", "version", "outputs", "source": {"topic",
    "partition", "offset"}}`, byte for byte, but joined from pieces: the parts every result of the call
    shares encoded once, each output column in one call (`json_rows`). A dict and an `orjson.dumps` per
    result cost more than scoring the row."""
    names = [orjson.dumps(name).replace(b"%", b"%%") for name in outputs]
    outputs_template = b"{" + b",".join(name + b":%b" for name in names) + b"}"
    rows = zip(*(json_rows(array) for array in outputs.values()), strict=True)
    shared = b',"model":%b,"version":%d,"outputs":' % (orjson.dumps(model), version)
    # Kafka's topic names are letters, digits, '.', '_' and '-': nothing JSON escapes.
    topics = {topic: topic.encode() for topic in {request.topic for request in requests}}
    dumps = orjson.dumps
    results = []
    for request, row in zip(requests, rows, strict=True):
        topic = topics[request.topic]
        source = b"%b-%d-%d" % (topic, request.partition, request.offset)
        key = b"null" if request.key is None else dumps(request.key.decode("utf-8", "replace"))
        request_id = b'"%b"' % source if request.request_id is None else dumps(request.request_id)
        value = b'{"key":%b,"request_id":%b%b%b,"source":{"topic":"%b","partition":%d,"offset":%d}}' % (
            key,
            request_id,
            shared,
            outputs_template % row,
            topic,
            request.partition,
            request.offset,
        )
        results.append((value, source))
    return results


def json_rows(array: np.ndarray) -> list[bytes]:
    """Each row of `array` as JSON, as `orjson.dumps(json_values(array)[row])` writes it. Numbers and
    booleans in one or two dimensions are encoded in one call and cut apart (their JSON holds no brackets
    or commas of its own); anything else row by row."""
    if array.dtype.kind in "biuf" and len(array):
        if array.ndim == 1:
            return orjson.dumps(array.tolist())[1:-1].split(b",")
        if array.ndim == 2 and array.shape[1]:
            return [b"[%b]" % row for row in orjson.dumps(array.tolist())[2:-2].split(b"],[")]
    return [orjson.dumps(value) for value in json_values(array)]


def batch_headers(time: bytes) -> list[tuple[str, bytes]]:
    """The headers every result of a batch shares."""
    return [
        ("ce_specversion", b"1.0"),
        ("ce_source", RESULT_SOURCE),
        ("ce_type", RESULT_EVENT_TYPE),
        ("ce_time", time),
        ("content-type", b"application/json"),
    ]
