"""Scoring requests as producers send them: the envelope or bare features, the topic's defaults, and a
reason for every record that cannot be a request."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from aiokafka.record.default_records import DefaultRecordBatch

from services.batch.consumer import PartitionRecords
from services.batch.record_batches import Parts, ResultBatch, encode_records
from services.batch.requests import (
    InvalidRequest,
    PartitionRequests,
    ScoringRequest,
    batch_headers,
    features_for,
    json_rows,
    parse_request,
    parse_requests,
    result_records,
)
from services.batch.scoring import ModelRef, _checked_inputs
from services.batch.settings import RequestTopic
from shared.events import ModelSignature, TensorSpec
from shared.tensors import json_values

DEFAULTS = RequestTopic(model="credit", alias="production", version=None)


def parse(value: object, defaults: RequestTopic = DEFAULTS) -> ScoringRequest:
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    return parse_request("scoring-requests", 2, 41, b"customer-7", raw, defaults)


def written(
    model: str, version: int, requests: PartitionRequests, outputs: dict[str, np.ndarray]
) -> list[tuple[bytes | None, bytes, dict[str, bytes]]]:
    """The results as Kafka reads them back from their record batch: key, value and headers each."""
    keys, value, source = result_records(model, version, requests, outputs)
    shared = [(name, [header]) for name, header in batch_headers(b"2026-01-01T00:00:00+00:00")]
    records, _ = encode_records(0, keys, value, [("ce_id", source), *shared])
    batch = ResultBatch(1 << 24, 0)
    batch.add(records, len(keys))
    batch._set_producer_state(1, 0, 0)
    read = DefaultRecordBatch(batch._build())
    assert read.validate_crc()
    return [(record.key, record.value, dict(record.headers)) for record in read]


def test_an_envelope_names_its_model_version_or_alias() -> None:
    request = parse({"features": [1, 2], "model": "fraud", "version": 3, "request_id": "r-1"})
    assert request.model == ModelRef("fraud", 3, "production")
    assert request.request_id == "r-1"
    assert parse({"features": {"age": 4}, "alias": "canary"}).model == ModelRef("credit", None, "canary")


def test_bare_features_take_the_topic_defaults_and_get_a_request_id_from_their_offset() -> None:
    pinned = RequestTopic(model="credit", version=5)
    request = parse([1.0, 2.0], pinned)
    assert request.model == ModelRef("credit", 5, "production")
    ((_, value, _),) = written("credit", 5, PartitionRequests.of([request]), {"label": np.array([1])})
    assert orjson.loads(value)["request_id"] == "scoring-requests-2-41"
    assert parse({"age": 41, "city": "Oslo"}).features == {"age": 41, "city": "Oslo"}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{not json", "not JSON"),
        ({"features": 3}, "'features' must be a list"),
        ({"features": [1], "model": ""}, "names no model"),
        ({"features": [1], "version": 0}, "'version' must be a whole number"),
        ({"features": [1], "version": True}, "'version' must be a whole number"),
        ({"features": [1], "alias": 7}, "'alias' must be a name"),
        ({"features": [1], "request_id": ""}, "'request_id' must be a string"),
    ],
)
def test_what_cannot_be_a_request_says_why(value: object, reason: str) -> None:
    with pytest.raises(InvalidRequest, match=reason):
        parse(value)
    with pytest.raises(InvalidRequest, match="has no default model"):
        parse([1.0], RequestTopic())


def test_a_result_echoes_the_key_and_points_at_its_source() -> None:
    request = parse({"features": [1, 2]})
    ((key, value, headers),) = written("credit", 4, PartitionRequests.of([request]), {"label": np.array([1])})
    assert key == b"customer-7"
    assert headers["ce_id"] == b"scoring-requests-2-41"
    assert orjson.loads(value) == {
        "key": "customer-7",
        "request_id": "scoring-requests-2-41",
        "model": "credit",
        "version": 4,
        "outputs": {"label": 1},
        "source": {"topic": "scoring-requests", "partition": 2, "offset": 41},
    }
    assert headers["ce_type"] == b"io.flywheel.scoring.result.v1"
    assert headers["ce_time"] == b"2026-01-01T00:00:00+00:00"


def _as_orjson_writes_it(
    request: ScoringRequest, model: str, version: int, outputs: dict[str, object]
) -> bytes:
    return orjson.dumps(
        {
            "key": None if request.key is None else request.key.decode("utf-8", "replace"),
            "request_id": request.request_id or request.source_id,
            "model": model,
            "version": version,
            "outputs": outputs,
            "source": {"topic": request.topic, "partition": request.partition, "offset": request.offset},
        }
    )


def test_results_are_byte_for_byte_what_orjson_writes_for_their_objects() -> None:
    """Plain keys and no request ids (each written from parts shared by the records) as well as keys JSON
    escapes, no key, and named request ids (each written alone)."""
    parts = [
        PartitionRequests.of(
            [
                parse_request("scoring-requests", 0, 7, b"plain", b"[1]", DEFAULTS),
                parse_request("scoring-requests", 0, 9, b"also plain: ~!@#$%^&*()", b"[1]", DEFAULTS),
            ]
        ),
        PartitionRequests.of(
            [
                parse_request(
                    "scoring-requests",
                    3,
                    2**40,
                    None,
                    b'{"features": [1], "request_id": "id \\"q\\" \\u00e9"}',
                    DEFAULTS,
                ),
                parse_request(
                    "scoring-requests", 3, 2**40 + 1, b'quote " back \\ \xff\x01', b"[1]", DEFAULTS
                ),
            ]
        ),
        PartitionRequests.of([parse_request("other.topic_x", 1, 0, "é".encode(), b"[1]", DEFAULTS)]),
    ]
    outputs: dict[str, np.ndarray] = {
        "label": np.array([1, 0, 1, 1, 0], dtype=np.int64),
        "probabilities": np.array(
            [[0.1, 0.9], [np.nan, np.inf], [1e-30, 3.4e38], [0.5, 0.5], [-0.0, 1]], dtype=np.float32
        ),
        "flag": np.array([True, False, True, False, False]),
        "names": np.array(["a", 'b"', "\u00e9", "", "x"], dtype=object),
        "cube": np.arange(20, dtype=np.float64).reshape(5, 2, 2),
        "empty rows": np.zeros((5, 0)),
        "per %d cent": np.array([0.5, -0.0, 2.0**60, 1, 2]),
    }
    row = 0
    for part in parts:
        rows = slice(row, row + len(part))
        results = written('fraud "v"', 12, part, {name: array[rows] for name, array in outputs.items()})
        for index, (key, value, headers) in enumerate(results):
            request = part.request(index)
            row_outputs = {name: json_values(array)[row + index] for name, array in outputs.items()}
            assert key == request.key
            assert value == _as_orjson_writes_it(request, 'fraud "v"', 12, row_outputs)
            assert headers["ce_id"] == request.source_id.encode()
        row += len(part)


@pytest.mark.parametrize(
    "array",
    [
        np.array([3, -1, 0], dtype=np.int8),
        np.array([0.25, np.nan, -np.inf], dtype=np.float64),
        np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint64),
        np.array([[True], [False]]),
        np.array([["x", "y"]], dtype=object),
        np.zeros((0, 2)),
    ],
)
def test_json_rows_writes_each_row_as_orjson_does(array: np.ndarray) -> None:
    assert _joined(json_rows(array), len(array)) == [orjson.dumps(value) for value in json_values(array)]


def _joined(parts: Parts, rows: int) -> list[bytes]:
    return [b"".join(part if isinstance(part, bytes) else part[row] for part in parts) for row in range(rows)]


# ------------------------------------------------ records written alike, read together (parse_requests)


def _signature(*inputs: TensorSpec) -> ModelSignature:
    return ModelSignature(
        inputs=list(inputs), outputs=[TensorSpec(name="label", datatype="INT64", shape=[-1])]
    )


SIGNATURES = [
    _signature(TensorSpec(name="x", datatype="FP32", shape=[-1, -1])),
    _signature(TensorSpec(name="x", datatype="FP64", shape=[-1, 3])),
    _signature(TensorSpec(name="x", datatype="FP16", shape=[-1, 3])),
    _signature(TensorSpec(name="x", datatype="INT64", shape=[-1, 3])),
    _signature(TensorSpec(name="x", datatype="INT8", shape=[-1, 3])),
    _signature(TensorSpec(name="x", datatype="BOOL", shape=[-1, 3])),
    _signature(*(TensorSpec(name=name, datatype="FP32", shape=[-1, 1]) for name in ("a", "b", "c"))),
]


def _alike(template: str, rows: list[str]) -> list[bytes | None]:
    return [template.replace("ROW", row).encode() for row in rows]


# Each a slice of record values, as a producer would send them: most read together, the rest one by one.
SLICES: dict[str, list[bytes | None]] = {
    "orjson's envelope": _alike(
        '{"features":[ROW],"model":"fraud"}', ["1.5,-2,3e-3", "0.1,0.2,0.3", "7,8,9"]
    ),
    "json.dumps' envelope": _alike('{"features": [ROW], "model": "fraud"}', ["1.5, -2, 3", "4, 5.25, 6"]),
    "spaces and newlines": _alike(
        '\n{ "model" : "fraud" ,\t"features" : [ ROW ] }\r\n', ["1 , 2,3", " 4,5 ,6 "]
    ),
    "bare lists": _alike("[ROW]", ["1,2,3", "4.5,5,6.25", "-0,0.0,-0.0"]),
    "whole numbers only": _alike("[ROW]", ["1,2,3", "300,-129,0", "9007199254740991,1,1"]),
    "a version, an alias and a request id": _alike(
        '{"version": 4, "features": [ROW], "alias": "canary", "request_id": "same"}', ["1,2,3", "4,5,6"]
    ),
    "the topic's pinned default": _alike('{"features":[ROW]}', ["1,2,3"]),
    "a number beyond FP32 and FP16": _alike("[ROW]", ["1e39,1,2", "70000.5,1,2", "1,2,3"]),
    "numbers as JSON allows them": _alike("[ROW]", ["1E5,1e+5,0.1e-2", "1e-400,-1.0E-7,12345.678901234567"]),
    "a model that is no name": _alike('{"features":[ROW],"model":""}', ["1,2,3", "4,5,6"]),
    "a version that is no number": _alike('{"features":[ROW],"version":"2"}', ["1,2,3"]),
    "one row too short": _alike("[ROW]", ["1,2,3", "1,2", "4,5,6"]),
    "a short row and a long one": _alike("[ROW]", ["1,2,3,4", "1,2", "1,2,3"]),
    "empty lists": _alike('{"features":[ROW]}', ["", " "]),
    "another model": [b'{"features":[1,2,3],"model":"fraud"}', b'{"features":[4,5,6],"model":"churn"}'],
    "a request id each": _alike('{"features":[1,2,3],"request_id":"ROW"}', ["a", "b"]),
    "2**53": _alike("[ROW]", ["1,2,3", "9007199254740993,1,2"]),
    "2**60 + 2**36 + 1": _alike("[ROW]", ["1152921573326323713,1,1"]),
    "a number beyond a double": _alike("[ROW]", ["1,2,3", "1e400,1,2"]),
    "a huge whole number": _alike("[ROW]", ["123456789012345678901234567890,1,2"]),
    "NaN as a string": _alike("[ROW]", ['1,"NaN",3', "1,2,3"]),
    "true and null": _alike("[ROW]", ["true,null,3", "1,2,3"]),
    "numbers JSON does not allow": _alike("[ROW]", ["+1,2,3", "1.,2,3", "01,2,3", "1,,3", ".5,1,2"]),
    "named features": [b'{"features":{"a":1,"b":2,"c":3}}', b'{"a":1,"b":2,"c":3}'],
    "rows in rows": _alike('{"features":[ROW]}', ["[1,2,3]", "[4,5,6]"]),
    "a bracket in a string": [b'{"model":"a[1]","features":[1,2,3]}', b'{"model":"a[1]","features":[1,2,3]}'],
    "the list is not the features": _alike('{"data":[ROW]}', ["1,2,3"]),
    "another list besides": _alike('{"features":[ROW],"tags":[]}', ["1,2,3", "4,5,6"]),
    "features twice": _alike('{"features":[ROW],"features":[9,9,9]}', ["1,2,3"]),
    "features twice, the last a number": _alike('{"features":[ROW],"features":5}', ["1,2,3"]),
    "features twice, the last empty": _alike('{"features":[ROW],"features":[]}', ["1,2,3"]),
    "empty features after the list": _alike('{"tags":[ROW],"features":[]}', ["1,2,3"]),
    "not JSON after the list": _alike('{"features":[ROW],"model":"fraud"}x', ["1,2,3", "4,5,6"]),
    "a tombstone": [None, b"[1,2,3]"],
    "nothing": [],
}


def _general(values: list[bytes | None], defaults: RequestTopic) -> list[ScoringRequest | InvalidRequest]:
    parsed: list[ScoringRequest | InvalidRequest] = []
    for offset, value in enumerate(values):
        try:
            parsed.append(parse_request("scoring-requests", 1, offset, b"k", value, defaults))
        except InvalidRequest as error:
            parsed.append(error)
    return parsed


Converted = tuple[list[int], dict[str, tuple[str, tuple[int, ...], bytes]], dict[int, str]]


def _scored(rows: list[object], signature: ModelSignature) -> Converted:
    scored, inputs, rejected = _checked_inputs(rows, signature)
    return (
        scored,
        {name: (array.dtype.str, array.shape, array.tobytes()) for name, array in inputs.items()},
        rejected,
    )


@pytest.mark.parametrize(
    "defaults", [DEFAULTS, RequestTopic(model="credit", version=9)], ids=["alias", "pinned"]
)
@pytest.mark.parametrize("name", list(SLICES))
def test_records_read_together_are_read_as_one_by_one(name: str, defaults: RequestTopic) -> None:
    """Requests, refusals and, for every kind of model input, the scored rows' inputs and the reasons
    rows are refused: the same whether the slice was read together or one record at a time."""
    values = SLICES[name]
    parts, invalid = parse_requests("scoring-requests", 1, _records(values, b"k"), defaults)
    together: dict[int, ScoringRequest | InvalidRequest] = {
        part.offsets[index]: part.request(index) for part in parts for index in range(len(part))
    }
    together.update(invalid)  # the offsets are the records' indexes here
    one_by_one = _general(values, defaults)
    assert sorted(together) == list(range(len(one_by_one)))
    for offset, general in enumerate(one_by_one):
        fast = together[offset]
        assert type(fast) is type(general)
        if isinstance(general, InvalidRequest):
            assert str(fast) == str(general)
            continue
        assert isinstance(fast, ScoringRequest)
        for field in ("topic", "partition", "offset", "key", "value", "model", "request_id"):
            assert getattr(fast, field) == getattr(general, field)
    requests = [request for request in one_by_one if isinstance(request, ScoringRequest)]
    for model in {request.model for request in requests}:
        read = [part for part in parts if part.model == model]
        alone = PartitionRequests.of([request for request in requests if request.model == model])
        for signature in SIGNATURES:
            assert _scored(features_for(read, signature), signature) == _scored(
                features_for([alone], signature), signature
            )


def _records(values: list[bytes | None], key: bytes | None) -> PartitionRecords:
    return PartitionRecords(list(range(len(values))), [key] * len(values), values)


def test_the_usual_records_are_read_together_into_rows_of_doubles() -> None:
    """The cases above would pass if nothing were ever read together: these must be."""
    for name in ("orjson's envelope", "json.dumps' envelope", "spaces and newlines", "bare lists"):
        parts, invalid = parse_requests("scoring-requests", 0, _records(SLICES[name], None), DEFAULTS)
        assert not invalid
        (part,) = parts
        assert isinstance(part.features, np.ndarray), name
        assert part.features.shape == (len(SLICES[name]), 3)
    parts, invalid = parse_requests(
        "scoring-requests", 0, _records(SLICES["a request id each"], None), DEFAULTS
    )
    assert not invalid
    assert all(isinstance(part.features, list) for part in parts)
