"""Scoring requests as producers send them: the envelope or bare features, the topic's defaults, and a
reason for every record that cannot be a request."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from services.batch.requests import (
    InvalidRequest,
    ScoringRequest,
    batch_headers,
    json_rows,
    parse_request,
    result_values,
)
from services.batch.scoring import ModelRef
from services.batch.settings import RequestTopic
from shared.tensors import json_values

DEFAULTS = RequestTopic(model="credit", alias="production", version=None)


def parse(value: object, defaults: RequestTopic = DEFAULTS) -> ScoringRequest:
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    return parse_request("scoring-requests", 2, 41, b"customer-7", raw, defaults)


def test_an_envelope_names_its_model_version_or_alias() -> None:
    request = parse({"features": [1, 2], "model": "fraud", "version": 3, "request_id": "r-1"})
    assert request.model == ModelRef("fraud", 3, "production")
    assert request.request_id == "r-1"
    assert parse({"features": {"age": 4}, "alias": "canary"}).model == ModelRef("credit", None, "canary")


def test_bare_features_take_the_topic_defaults_and_get_a_request_id_from_their_offset() -> None:
    pinned = RequestTopic(model="credit", version=5)
    request = parse([1.0, 2.0], pinned)
    assert request.model == ModelRef("credit", 5, "production")
    ((value, _),) = result_values("credit", 5, [request], {"label": np.array([1])})
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
    ((value, source),) = result_values("credit", 4, [request], {"label": np.array([1])})
    assert source == b"scoring-requests-2-41"
    assert orjson.loads(value) == {
        "key": "customer-7",
        "request_id": "scoring-requests-2-41",
        "model": "credit",
        "version": 4,
        "outputs": {"label": 1},
        "source": {"topic": "scoring-requests", "partition": 2, "offset": 41},
    }
    headers = dict(batch_headers(b"2026-01-01T00:00:00+00:00"))
    assert headers["ce_type"] == b"io.flywheel.scoring.result.v1"


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
    requests = [
        parse_request("scoring-requests", 0, 7, b"plain", b"[1]", DEFAULTS),
        parse_request(
            "scoring-requests",
            3,
            2**40,
            None,
            b'{"features": [1], "request_id": "id \\"q\\" \\u00e9"}',
            DEFAULTS,
        ),
        parse_request("other.topic_x", 1, 0, b'quote " back \\ \xff\x01', b"[1]", DEFAULTS),
    ]
    outputs: dict[str, np.ndarray] = {
        "label": np.array([1, 0, 1], dtype=np.int64),
        "probabilities": np.array([[0.1, 0.9], [np.nan, np.inf], [1e-30, 3.4e38]], dtype=np.float32),
        "flag": np.array([True, False, True]),
        "names": np.array(["a", 'b"', "\u00e9"], dtype=object),
        "cube": np.arange(12, dtype=np.float64).reshape(3, 2, 2),
        "empty rows": np.zeros((3, 0)),
        "per %d cent": np.array([0.5, -0.0, 2.0**60]),
    }
    values = result_values('fraud "v"', 12, requests, outputs)
    for row, (request, (value, source)) in enumerate(zip(requests, values, strict=True)):
        row_outputs = {name: json_values(array)[row] for name, array in outputs.items()}
        assert value == _as_orjson_writes_it(request, 'fraud "v"', 12, row_outputs)
        assert source == request.source_id.encode()


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
    assert json_rows(array) == [orjson.dumps(value) for value in json_values(array)]
