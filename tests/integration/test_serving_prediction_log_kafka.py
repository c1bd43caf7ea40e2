"""The prediction log on a real Kafka: every prediction recorded reaches the topic exactly once."""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pytest

from services.serving.prediction_log import AnsweredRequest, PredictionLog
from shared.events import CloudEvent, PredictionLogged, Topic
from tests.integration.conftest import KafkaBusFactory
from tests.waiting import eventually


async def test_every_recorded_prediction_arrives_on_kafka_exactly_once(
    kafka_bus_factory: KafkaBusFactory, unique_name: str
) -> None:
    serving_bus = await kafka_bus_factory(namespace=unique_name)
    prediction_log = PredictionLog(serving_bus, batch_size=500, flush_interval_seconds=0.05)
    await prediction_log.start()
    expected = [f"request-{number}" for number in range(1200)]
    for number, request_id in enumerate(expected):
        prediction_log.record(
            AnsweredRequest(
                request_id=request_id,
                model=f"model-{number % 3}",
                version=1,
                inputs={"x": np.array([[float(number)]])},
                outputs={"score": np.array([0.5])},
                latency_ms=1.0,
                timestamp=time.time(),
            )
        )
    await prediction_log.stop()
    assert prediction_log.fill == 0

    received: list[str] = []

    async def collect(event: CloudEvent) -> None:
        received.extend(record.request_id for record in event.payload_as(PredictionLogged).records())

    monitor_bus = await kafka_bus_factory(namespace=unique_name)
    await monitor_bus.subscribe(Topic.PREDICTION_LOGGED, f"{unique_name}-monitor", collect)
    await eventually(lambda: len(received) >= len(expected), within=30, what="1200 predictions consumed")

    assert Counter(received) == Counter(expected)


async def test_predictions_of_a_wide_model_reach_kafka_in_events_it_accepts(
    kafka_bus_factory: KafkaBusFactory, unique_name: str
) -> None:
    """2,000 rows of 200 features are about 8 MB of JSON, far over what Kafka takes in one record (1 MB):
    the log publishes them in smaller events instead of retrying one it can never send."""
    serving_bus = await kafka_bus_factory(namespace=unique_name)
    prediction_log = PredictionLog(serving_bus, batch_size=2000, flush_interval_seconds=0.05)
    await prediction_log.start()
    rows = np.random.default_rng(7).random((2000, 200))
    for number, part in enumerate(np.split(rows, [1500, 1999])):  # 1,500 rows, 499, and 1
        prediction_log.record(
            AnsweredRequest(
                request_id=f"wide-{number}",
                model="wide",
                version=1,
                inputs={"x": part},
                outputs={"score": part[:, 0]},
                latency_ms=1.0,
                timestamp=time.time(),
            )
        )
    await prediction_log.stop()
    assert prediction_log.fill == 0

    received: list[tuple[str, float]] = []

    async def collect(event: CloudEvent) -> None:
        logged = event.payload_as(PredictionLogged)
        received.extend((record.request_id, record.outputs["score"]) for record in logged.records())

    monitor_bus = await kafka_bus_factory(namespace=unique_name)
    await monitor_bus.subscribe(Topic.PREDICTION_LOGGED, f"{unique_name}-monitor", collect)
    await eventually(lambda: len(received) >= len(rows), within=30, what="2000 wide predictions consumed")

    expected_ids = [
        f"wide-{number}" if row == 0 else f"wide-{number}:{row}"
        for number, count in enumerate([1500, 499, 1])
        for row in range(count)
    ]
    assert [request_id for request_id, _ in received] == expected_ids  # one key: in order, once each
    assert [score for _, score in received] == pytest.approx(rows[:, 0].tolist())
