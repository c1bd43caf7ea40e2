"""The prediction log on a real Kafka: every prediction recorded reaches the topic exactly once."""

from __future__ import annotations

import time
from collections import Counter

import numpy as np

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
