"""CloudEvents envelopes and typed payloads: what goes on the wire and what is refused."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from shared.events import (
    PAYLOAD_TYPES,
    CloudEvent,
    DeadLetter,
    InvalidEvent,
    LoggedRequest,
    ModelPromoted,
    ModelRegistered,
    ModelSignature,
    PredictionLogged,
    PredictionRecord,
    RunCompleted,
    TensorSpec,
    Topic,
    TrafficPolicy,
    dead_letter_topic,
)

SHA = "a" * 64


def registered() -> ModelRegistered:
    return ModelRegistered(
        name="credit-risk",
        version=3,
        artifact_uri="s3://flywheel/models/credit-risk/3/model.onnx",
        artifact_sha256=SHA,
        signature=ModelSignature(
            inputs=[TensorSpec(name="income", datatype="FP32", shape=[-1, 1])],
            outputs=[TensorSpec(name="probabilities", datatype="FP32", shape=[-1, 2])],
        ),
        source_run_id="run-1",
    )


def test_envelope_carries_the_cloudevents_required_attributes() -> None:
    event = CloudEvent.wrap(registered(), source="/flywheel/registry", subject="credit-risk")
    wire = json.loads(event.to_json())
    assert wire["specversion"] == "1.0"
    assert wire["type"] == "io.flywheel.model.registered.v1"
    assert wire["source"] == "/flywheel/registry"
    assert wire["subject"] == "credit-risk"
    assert wire["datacontenttype"] == "application/json"
    assert wire["id"]
    assert wire["time"].endswith("Z") or "+00:00" in wire["time"]
    assert wire["data"]["version"] == 3


def test_envelope_round_trips_to_the_same_typed_payload() -> None:
    event = CloudEvent.wrap(registered(), source="/flywheel/registry")
    parsed = CloudEvent.from_json(event.to_json())
    assert parsed == event
    assert parsed.payload_as(ModelRegistered) == registered()


def test_every_payload_type_is_versioned_and_has_a_home_topic() -> None:
    for event_type, payload_type in PAYLOAD_TYPES.items():
        assert event_type.startswith("io.flywheel.")
        assert re.fullmatch(r"io\.flywheel\.[a-z.-]+\.v[1-9][0-9]*", event_type), event_type
        assert payload_type.topic is not None or payload_type is DeadLetter
    assert {payload.topic for payload in PAYLOAD_TYPES.values()} - {None} == set(Topic)


def test_unknown_extension_attributes_are_kept() -> None:
    event = CloudEvent.wrap(registered(), source="/x")
    wire = json.loads(event.to_json())
    wire["traceparent"] = "00-abc-def-01"
    parsed = CloudEvent.from_json(json.dumps(wire).encode())
    assert json.loads(parsed.to_json())["traceparent"] == "00-abc-def-01"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "not a CloudEvents 1.0 JSON envelope"),
        (b'{"specversion": "0.3", "source": "/x", "type": "t", "data": {}}', "not a CloudEvents 1.0"),
        (b'{"source": "/x", "type": "io.example.other.v1", "data": {}}', "unknown event type"),
        (
            b'{"source": "/x", "type": "io.flywheel.model.promoted.v1", "data": {"name": "m", "alias": "p"}}',
            "does not match its schema",
        ),
    ],
)
def test_malformed_events_are_refused_with_the_reason(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidEvent, match=message):
        CloudEvent.from_json(raw)


def test_payload_of_the_wrong_type_is_refused_by_a_consumer() -> None:
    event = CloudEvent.wrap(ModelPromoted(name="m", alias="production", version=2), source="/x")
    with pytest.raises(InvalidEvent, match=re.escape("expected a io.flywheel.model.registered.v1 event")):
        event.payload_as(ModelRegistered)


def test_run_completed_must_say_what_it_produced_or_why_it_failed() -> None:
    with pytest.raises(ValueError, match="finished run needs artifact_uri"):
        RunCompleted(run_id="r", experiment="e", status="finished")
    with pytest.raises(ValueError, match="failed run needs a failure_reason"):
        RunCompleted(run_id="r", experiment="e", status="failed")
    failed = RunCompleted(run_id="r", experiment="e", status="failed", failure_reason="parity: 3e-2 > 1e-4")
    assert failed.failure_reason


def test_prediction_logged_holds_columns_and_reads_as_one_record_per_row() -> None:
    at = datetime(2026, 11, 23, tzinfo=UTC)
    logged = PredictionLogged(
        model="m",
        version=2,
        alias="canary",
        requests=[
            LoggedRequest(request_id="a", rows=2, latency_ms=0.4, timestamp=at),
            LoggedRequest(request_id="b", rows=1, first_row=500, latency_ms=0.3, timestamp=at),
        ],
        features={"income": [1.5, 2.5, 3.5], "city": ["Oslo", "Lima", None]},
        outputs={"label": [1, 0, 1], "probabilities": [[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]]},
    )
    records = logged.records()
    assert [record.request_id for record in records] == ["a", "a:1", "b:500"]
    assert records[1] == PredictionRecord(
        request_id="a:1",
        model="m",
        version=2,
        features={"income": 2.5, "city": "Lima"},
        outputs={"label": 0, "probabilities": [0.8, 0.2]},
        latency_ms=0.4,
        timestamp=at,
        alias="canary",
    )


def test_prediction_logged_refuses_columns_that_do_not_match_its_rows() -> None:
    request = LoggedRequest(request_id="a", rows=2, latency_ms=0.4, timestamp=datetime.now(UTC))
    with pytest.raises(ValueError, match="'label' has 1 values; the requests have 2 rows"):
        PredictionLogged(
            model="m", version=1, requests=[request], features=[[1.0], [2.0]], outputs={"label": [1]}
        )
    with pytest.raises(ValueError, match="at least 1 item"):
        PredictionLogged(model="m", version=1, requests=[], features=[], outputs={})


def test_dead_letter_keeps_binary_and_text_values_intact() -> None:
    fields = {"source_topic": "t", "consumer_group": "g", "error": "boom", "attempts": 1}
    text = DeadLetter.of_raw(b'{"a": 1}', **fields)
    binary = DeadLetter.of_raw(b"\xff\xfe\x00", **fields)
    assert (text.value_encoding, text.raw_value()) == ("utf-8", b'{"a": 1}')
    assert (binary.value_encoding, binary.raw_value()) == ("base64", b"\xff\xfe\x00")


def test_dead_letter_topic_is_the_topics_dlq_twin() -> None:
    assert dead_letter_topic(Topic.PREDICTION_LOGGED) == "prediction-logged.dlq"


@pytest.mark.parametrize(
    ("policy", "complaint"),
    [
        ({"split": {}}, "at least 1"),
        ({"split": {"production": 90, "canary": 5}}, "sum to 95"),
        ({"split": {"production": 120, "canary": -20}}, "percentages"),
        ({"split": {"production": 100}, "shadow": ["production"]}, "both in the split and a shadow"),
        ({"split": {"production": 100}, "shadow": ["staging", "staging"]}, "repeat"),
        ({"split": {"prod uction": 100}}, "pattern"),
    ],
)
def test_a_traffic_policy_refuses_what_cannot_route(policy: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        TrafficPolicy.model_validate(policy)


def test_a_traffic_policy_lists_its_aliases() -> None:
    policy = TrafficPolicy(split={"production": 90, "canary": 10}, shadow=["staging"])
    assert policy.aliases() == ["production", "canary", "staging"]
