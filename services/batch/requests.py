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
import itertools
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import simdjson

from services.batch.consumer import PartitionRecords
from services.batch.record_batches import Parts
from services.batch.scoring import ModelRef
from services.batch.settings import RequestTopic
from shared.events import ModelSignature
from shared.tensors import Tensors, exact_doubles, json_values, rows_of_doubles_input

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
    # As JSON gives them, or a list of numbers read straight into doubles (`parse_requests`).
    features: list[Any] | dict[str, Any] | np.ndarray
    request_id: str | None  # as the record names it; None: `<topic>-<partition>-<offset>` stands for it

    @property
    def source_id(self) -> str:
        """Where the record came from: its result's id, and its request id when it names none."""
        return f"{self.topic}-{self.partition}-{self.offset}"


@dataclass(slots=True)
class PartitionRequests:
    """Requests from one partition for one model, in offset order, as columns (an entry a record): a slice
    of them is parsed, scored and written without an object per record."""

    topic: str  # the request topic's plain name
    partition: int
    model: ModelRef
    offsets: list[int]
    keys: list[bytes | None]
    values: list[bytes]  # as sent: a dead letter keeps it whole
    # As each record names it; None: `<topic>-<partition>-<offset>` stands for it.
    request_ids: list[str | None]
    # Rows of doubles read together (`parse_requests`: a matrix, a row a record), or each record's features
    # as JSON gives them.
    features: np.ndarray | list[Any]

    def __len__(self) -> int:
        return len(self.offsets)

    def request(self, index: int) -> ScoringRequest:
        """One record's request."""
        return ScoringRequest(
            self.topic,
            self.partition,
            self.offsets[index],
            self.keys[index],
            self.values[index],
            self.model,
            self.features[index],
            self.request_ids[index],
        )

    def take(self, indexes: list[int]) -> PartitionRequests:
        """Only these records (indexes in order)."""
        features = self.features
        return PartitionRequests(
            self.topic,
            self.partition,
            self.model,
            [self.offsets[index] for index in indexes],
            [self.keys[index] for index in indexes],
            [self.values[index] for index in indexes],
            [self.request_ids[index] for index in indexes],
            features[indexes] if isinstance(features, np.ndarray) else [features[index] for index in indexes],
        )

    @classmethod
    def of(cls, requests: Sequence[ScoringRequest]) -> PartitionRequests:
        """Requests read one by one (of one partition and model, in order) as columns."""
        first = requests[0]
        return cls(
            first.topic,
            first.partition,
            first.model,
            [request.offset for request in requests],
            [request.key for request in requests],
            [request.value for request in requests],
            [request.request_id for request in requests],
            [request.features for request in requests],
        )


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
    model, request_id = _addressed(envelope, topic, defaults)
    return ScoringRequest(topic, partition, offset, key, value or b"", model, features, request_id)


def _addressed(envelope: dict[str, Any], topic: str, defaults: RequestTopic) -> tuple[ModelRef, str | None]:
    """The model an envelope asks for and its request id, the topic's defaults filled in."""
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
    return _model_ref(model, version, alias or defaults.alias), request_id


def parse_requests(
    topic: str, partition: int, records: PartitionRecords, defaults: RequestTopic
) -> tuple[list[PartitionRequests], dict[int, InvalidRequest]]:
    """The records' requests, as columns by the model they ask for, and what is wrong with each record that
    is no request (by its index in `records`), as `parse_request` reads them. Records written alike, the
    same JSON but for a list of numbers (`{"features": [20 numbers], "model": "m"}` from one producer), are
    read together: their numbers in one simdjson call straight into a matrix of doubles (a row a record)
    and the rest of the JSON once. That saves about a microsecond a record, a third of reading each with
    orjson and numpy reading its Python numbers again. Records of any other kind are read one by one."""
    values = [value or b"" for value in records.values]
    alike = _written_alike(values)
    address = None if alike is None else _template_address(alike[0], topic, defaults)
    if alike is None or address is None:
        return _parsed_one_by_one(topic, partition, records, defaults)
    if isinstance(address, InvalidRequest):
        return [], dict.fromkeys(range(len(records)), address)
    model, request_id = address
    count = len(records)
    return [
        PartitionRequests(
            topic, partition, model, records.offsets, records.keys, values, [request_id] * count, alike[1]
        )
    ], {}


def _parsed_one_by_one(
    topic: str, partition: int, records: PartitionRecords, defaults: RequestTopic
) -> tuple[list[PartitionRequests], dict[int, InvalidRequest]]:
    by_model: dict[ModelRef, list[ScoringRequest]] = {}
    invalid: dict[int, InvalidRequest] = {}
    columns = zip(records.offsets, records.keys, records.values, strict=True)
    for index, (offset, key, value) in enumerate(columns):
        try:
            request = parse_request(topic, partition, offset, key, value, defaults)
        except InvalidRequest as error:
            invalid[index] = error
        else:
            by_model.setdefault(request.model, []).append(request)
    return [PartitionRequests.of(requests) for requests in by_model.values()], invalid


# What a JSON list of numbers is written with, besides its brackets.
_NUMBER_LIST_TEXT = b"0123456789+-.eE, \t\n\r"


def _written_alike(values: list[bytes]) -> tuple[bytes, np.ndarray] | None:
    """The JSON every value shares around its first list, that list emptied (`{"features":[],"model":"m"}`),
    and the values' lists as the rows of a matrix of doubles; None unless every value is that JSON around
    a list of as many numbers, which simdjson reads as JSON does (`exact_doubles`). Every step is one C
    call over all the values."""
    if not values:
        return None
    start = values[0].find(b"[")
    end = values[0].find(b"]", start + 1)
    if start < 0 or end < 0:
        return None
    before, after = values[0][: start + 1], values[0][end:]
    if (
        min(map(len, values)) < len(before) + len(after)
        or not all(map(bytes.startswith, values, itertools.repeat(before)))
        or not all(map(bytes.endswith, values, itertools.repeat(after)))
    ):
        return None
    # The values' lists, each between `before` and `after`, as one JSON list of rows.
    text = b"[[" + b"],[".join(map(operator.itemgetter(slice(len(before), -len(after))), values)) + b"]]"
    # Exactly the brackets of n rows, and only what numbers are written with in the rows: a list with a
    # bracket of its own would leave one too many.
    if text.translate(None, _NUMBER_LIST_TEXT) != b"[" + b"[]" * len(values) + b"]":
        return None
    try:
        rows = simdjson.Parser().parse(text)
        # A list of lists, as the text is (the types simdjson declares cannot say so).
        widths: list[int] = list(map(len, rows))  # type: ignore[arg-type]
        numbers = exact_doubles(rows)  # type: ignore[arg-type]
    except (ValueError, TypeError, RuntimeError):  # not JSON: a number out of range, a comma too many
        return None
    if numbers is None or not widths[0] or widths.count(widths[0]) != len(widths):
        return None  # lists of different lengths, or empty: each record is read (and refused) alone
    return before + after, numbers.reshape(len(values), widths[0])


def _template_address(
    template: bytes, topic: str, defaults: RequestTopic
) -> tuple[ModelRef, str | None] | InvalidRequest | None:
    """What records of this JSON around their list of numbers (the list emptied: `template`) ask for, when
    that list is their features (bare, or the envelope's `features`); None when it is not (each record
    is then read whole)."""
    try:
        body = orjson.loads(template)
    except orjson.JSONDecodeError:
        return None
    if body == []:
        envelope: dict[str, Any] = {}
    elif isinstance(body, dict) and body.get("features") == [] and template.count(b"[") == 1:
        envelope = body  # the only list in it is the emptied one, so that list is the features
    else:
        return None
    try:
        return _addressed(envelope, topic, defaults)
    except InvalidRequest as error:
        return error


def features_for(parts: Sequence[PartitionRequests], signature: ModelSignature) -> list[Any]:
    """The requests' features, the parts' in turn, as `ScoringModels.score` takes them for a model. Rows
    read as doubles are what JSON's numbers would give for a model with one 2-D FP32 or FP64 input; for any
    other model a record's features are read again as JSON gives them (whole numbers as integers, which the
    checks of an integer or boolean input tell apart)."""
    if rows_of_doubles_input(signature) is not None:
        return list(itertools.chain.from_iterable(part.features for part in parts))
    features: list[Any] = []
    for part in parts:
        if isinstance(part.features, np.ndarray):
            features += map(_json_features, part.values)
        else:
            features += part.features
    return features


def _json_features(value: bytes) -> Any:
    body = orjson.loads(value)
    return body["features"] if isinstance(body, dict) and "features" in body else body


@functools.lru_cache(maxsize=4096)
def _model_ref(name: str, version: int | None, alias: str) -> ModelRef:
    """One ModelRef per distinct reference: records of a batch name the same few models."""
    return ModelRef(name, version, alias)


def result_records(
    model: str, version: int, requests: PartitionRequests, outputs: Tensors
) -> tuple[list[bytes | None], Parts, Parts]:
    """The requests' results as `encode_records` takes them: their keys, their values' parts and the parts
    of their `ce_id` (the source's topic, partition and offset, also the request id of a record that names
    none); `outputs` has a row per request.

    Each value is `orjson.dumps` of `{"key", "request_id", "model", "version", "outputs", "source": {"topic",
    "partition", "offset"}}`, byte for byte, but written as parts: what every result shares encoded once,
    each column (the offsets, each output) in one call over the requests."""
    # Kafka's topic names are letters, digits, '.', '_' and '-': nothing JSON escapes.
    topic = requests.topic.encode()
    offsets = orjson.dumps(requests.offsets)[1:-1].split(b",")
    prefix = b"%b-%d-" % (topic, requests.partition)
    source: Parts = [prefix, offsets]
    if _plain_strings(requests.keys):
        key: Parts = [b'"', requests.keys, b'"']  # type: ignore[list-item]  # no None among them
    else:
        key = [[b"null" if key is None else _json_string(key) for key in requests.keys]]
    if not any(requests.request_ids):
        request_id: Parts = [b'"', *source, b'"']
    else:
        request_id = [
            [
                orjson.dumps(named) if named else b'"%b%b"' % (prefix, offset)
                for named, offset in zip(requests.request_ids, offsets, strict=True)
            ]
        ]
    output_parts: list[bytes | Sequence[bytes]] = []
    for position, (name, array) in enumerate(outputs.items()):
        output_parts += [b"," if position else b"", orjson.dumps(name) + b":", *json_rows(array)]
    value: Parts = [
        b'{"key":',
        *key,
        b',"request_id":',
        *request_id,
        b',"model":%b,"version":%d,"outputs":{' % (orjson.dumps(model), version),
        *output_parts,
        b'},"source":{"topic":"%b","partition":%d,"offset":' % (topic, requests.partition),
        offsets,
        b"}}",
    ]
    return requests.keys, value, source


# What JSON writes as it is inside a string: printable ASCII but the quote and the backslash.
_PLAIN_STRING_BYTES = bytes(range(0x20, 0x7F)).replace(b'"', b"").replace(b"\\", b"")


def _plain_strings(values: list[bytes | None]) -> bool:
    """Whether every value is there and JSON writes it as it is between quotes."""
    return None not in values and not b"".join(values).translate(None, _PLAIN_STRING_BYTES)  # type: ignore[arg-type]


def _json_string(value: bytes) -> bytes:
    return orjson.dumps(value.decode("utf-8", "replace"))


def json_rows(array: np.ndarray) -> Parts:
    """Each row of `array` as JSON, as `orjson.dumps(json_values(array)[row])` writes it, in parts. Numbers
    and booleans in one or two dimensions are encoded in one call and cut apart (their JSON holds no
    brackets or commas of its own); anything else row by row."""
    if array.dtype.kind in "biuf" and len(array):
        if array.ndim == 1:
            return [orjson.dumps(array.tolist())[1:-1].split(b",")]
        if array.ndim == 2 and array.shape[1]:
            return [b"[", orjson.dumps(array.tolist())[2:-2].split(b"],["), b"]"]
    return [[orjson.dumps(value) for value in json_values(array)]]


def batch_headers(time: bytes) -> list[tuple[str, bytes]]:
    """The headers every result of a batch shares."""
    return [
        ("ce_specversion", b"1.0"),
        ("ce_source", RESULT_SOURCE),
        ("ce_type", RESULT_EVENT_TYPE),
        ("ce_time", time),
        ("content-type", b"application/json"),
    ]
