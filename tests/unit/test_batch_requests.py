"""Scoring requests as producers send them: the envelope or bare features, the topic's defaults, and a
reason for every record that cannot be a request."""

from __future__ import annotations

import orjson
import pytest

from services.batch.requests import (
    InvalidRequest,
    ScoringRequest,
    batch_headers,
    parse_request,
    result_record,
)
from services.batch.scoring import ModelRef
from services.batch.settings import RequestTopic

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
    value, _ = result_record(request, 5, {"label": 1}, [])
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
    value, headers = result_record(request, 4, {"label": 1}, batch_headers(b"2026-01-01T00:00:00+00:00"))
    assert dict(headers)["ce_id"] == b"scoring-requests-2-41"
    assert dict(headers)["ce_type"] == b"io.flywheel.scoring.result.v1"
    assert orjson.loads(value) == {
        "key": "customer-7",
        "request_id": "scoring-requests-2-41",
        "model": "credit",
        "version": 4,
        "outputs": {"label": 1},
        "source": {"topic": "scoring-requests", "partition": 2, "offset": 41},
    }
