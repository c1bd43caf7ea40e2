"""The prediction log: batches of at most batch_size, every prediction published exactly once, a full
buffer drops and counts, a failing bus loses nothing, stop() flushes within its timeout, and record()
never waits for Kafka."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections import Counter
from collections.abc import Iterable

import numpy as np
from prometheus_client import REGISTRY

from services.serving.prediction_log import (
    MAX_REQUESTS_PER_EVENT,
    AnsweredRequest,
    PredictionLog,
    encode_batch,
)
from shared.bus import InMemoryBus
from shared.events import CloudEvent, PredictionLogged, Topic
from tests.waiting import eventually


def prediction(number: int, model: str = "churn") -> AnsweredRequest:
    return AnsweredRequest(
        request_id=f"request-{number}",
        model=model,
        version=1,
        inputs={"x": np.array([[float(number)]], dtype=np.float32)},
        outputs={"score": np.array([0.5], dtype=np.float32)},
        latency_ms=1.0,
        timestamp=time.time(),
    )


def record_all(prediction_log: PredictionLog, answered: Iterable[AnsweredRequest]) -> None:
    for request in answered:
        prediction_log.record(request)


def published(bus: InMemoryBus) -> list[PredictionLogged]:
    return [
        CloudEvent.from_json(record.value).payload_as(PredictionLogged)
        for record in bus.records(Topic.PREDICTION_LOGGED)
    ]


def published_ids(bus: InMemoryBus) -> list[str]:
    return [record.request_id for event in published(bus) for record in event.records()]


def metric(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


class FailingBus(InMemoryBus):
    """Raises on the first `failures` publishes, then works."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.attempts = 0

    async def publish_raw(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise ConnectionError("Kafka is down")
        await super().publish_raw(topic, value, key)


class HangingBus(InMemoryBus):
    """Every publish waits until `release` is set: Kafka that is slow to acknowledge."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.entered = asyncio.Event()

    async def publish_raw(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        self.entered.set()
        await self.release.wait()
        await super().publish_raw(topic, value, key)


async def test_record_is_a_plain_function_that_cannot_await() -> None:
    assert not inspect.iscoroutinefunction(PredictionLog.record)


async def test_everything_recorded_is_published_once_in_batches_of_at_most_batch_size() -> None:
    bus = InMemoryBus()
    prediction_log = PredictionLog(bus, batch_size=50, flush_interval_seconds=0.05)
    await prediction_log.start()
    record_all(prediction_log, [prediction(number) for number in range(437)])
    await eventually(lambda: len(published_ids(bus)) == 437, within=5, what="437 predictions published")
    await prediction_log.stop()

    assert sorted(published_ids(bus)) == sorted(f"request-{number}" for number in range(437))
    assert all(1 <= event.rows <= 50 for event in published(bus))
    assert published_ids(bus) == [f"request-{number}" for number in range(437)]  # one model: in order


async def test_a_batch_is_split_into_one_event_per_model_keyed_by_model() -> None:
    bus = InMemoryBus()
    prediction_log = PredictionLog(bus, batch_size=100)
    await prediction_log.start()
    record_all(prediction_log, [prediction(number, model=f"model-{number % 3}") for number in range(30)])
    await prediction_log.stop()

    records = bus.records(Topic.PREDICTION_LOGGED)
    assert len(records) == 3
    for record in records:
        event = CloudEvent.from_json(record.value).payload_as(PredictionLogged)
        assert event.model == (record.key.decode() if record.key else None)
    assert Counter(published_ids(bus)) == Counter(f"request-{number}" for number in range(30))


async def test_a_full_buffer_drops_and_counts_what_does_not_fit() -> None:
    bus = InMemoryBus()
    prediction_log = PredictionLog(bus, capacity=10)
    dropped_before = metric("flywheel_serving_predictions_dropped_total", {"reason": "buffer_full"})

    record_all(prediction_log, [prediction(number) for number in range(15)])  # not started: nothing drains

    assert prediction_log.fill == 10
    dropped = metric("flywheel_serving_predictions_dropped_total", {"reason": "buffer_full"}) - dropped_before
    assert dropped == 5
    await prediction_log.start()
    await prediction_log.stop()
    assert published_ids(bus) == [f"request-{number}" for number in range(10)]


async def test_a_failing_bus_is_retried_and_loses_nothing() -> None:
    bus = FailingBus(failures=3)
    prediction_log = PredictionLog(bus, batch_size=20, flush_interval_seconds=0.02)
    errors_before = metric("flywheel_serving_prediction_log_errors_total")
    logged_before = metric("flywheel_serving_predictions_logged_total")
    await prediction_log.start()

    record_all(prediction_log, [prediction(number) for number in range(50)])
    await eventually(lambda: len(published_ids(bus)) == 50, within=10, what="50 predictions published")
    await prediction_log.stop()

    assert published_ids(bus) == [f"request-{number}" for number in range(50)]
    assert bus.attempts > 3
    assert metric("flywheel_serving_prediction_log_errors_total") - errors_before == 3
    assert metric("flywheel_serving_predictions_logged_total") - logged_before == 50


async def test_stop_flushes_what_is_still_buffered() -> None:
    bus = InMemoryBus()
    prediction_log = PredictionLog(bus, batch_size=500, flush_interval_seconds=60)  # the timer never fires
    await prediction_log.start()
    record_all(prediction_log, [prediction(number) for number in range(120)])
    assert published_ids(bus) == []

    await prediction_log.stop()

    assert published_ids(bus) == [f"request-{number}" for number in range(120)]
    assert prediction_log.fill == 0


async def test_record_keeps_working_while_a_publish_hangs() -> None:
    bus = HangingBus()
    prediction_log = PredictionLog(bus, batch_size=10, flush_interval_seconds=0.01)
    await prediction_log.start()
    record_all(prediction_log, [prediction(number) for number in range(10)])
    await asyncio.wait_for(bus.entered.wait(), timeout=5)

    record_all(prediction_log, [prediction(number) for number in range(10, 25)])

    assert prediction_log.fill == 25  # the hung batch still counts until Kafka acknowledges it
    bus.release.set()
    await prediction_log.stop()
    assert published_ids(bus) == [f"request-{number}" for number in range(25)]


async def test_stop_gives_up_at_its_timeout_and_counts_the_rest_as_dropped() -> None:
    bus = HangingBus()  # never released
    prediction_log = PredictionLog(bus, batch_size=10, flush_interval_seconds=0.01)
    dropped_before = metric("flywheel_serving_predictions_dropped_total", {"reason": "shutdown"})
    await prediction_log.start()
    record_all(prediction_log, [prediction(number) for number in range(30)])
    await asyncio.wait_for(bus.entered.wait(), timeout=5)

    loop = asyncio.get_running_loop()
    started = loop.time()
    await prediction_log.stop(timeout=0.3)

    assert loop.time() - started < 2
    dropped = metric("flywheel_serving_predictions_dropped_total", {"reason": "shutdown"}) - dropped_before
    assert dropped == 30
    assert prediction_log.fill == 0
    prediction_log.record(prediction(99))  # after stop: dropped, not buffered forever
    assert prediction_log.fill == 0


def test_answered_requests_become_one_columnar_event_per_model_version() -> None:
    named = AnsweredRequest(
        request_id="r",
        model="credit",
        version=3,
        inputs={"age": np.array([[41.0], [52.0]]), "city": np.array([["Oslo"], ["Lima"]], dtype=object)},
        outputs={"label": np.array([1, 0]), "probabilities": np.array([[0.2, 0.8], [0.9, float("nan")]])},
        latency_ms=2.5,
        timestamp=0.0,
        alias="canary",
        shadow=True,
    )
    second = AnsweredRequest(
        "s",
        "credit",
        3,
        {"age": np.array([[30.0]]), "city": np.array([["Rome"]], dtype=object)},
        {"label": np.array([1]), "probabilities": np.array([[0.4, 0.6]])},
        1.0,
        0.0,
        "canary",
        True,
    )
    event = CloudEvent.from_json(encode_batch([named, second], source="/serving"))
    assert (event.source, event.subject, event.type) == ("/serving", "credit", PredictionLogged.event_type)
    logged = event.payload_as(PredictionLogged)
    assert logged.features == {"age": [41.0, 52.0, 30.0], "city": ["Oslo", "Lima", "Rome"]}
    assert logged.outputs["probabilities"] == [[0.2, 0.8], [0.9, None], [0.4, 0.6]]  # NaN is JSON null
    records = logged.records()
    assert [record.request_id for record in records] == ["r", "r:1", "s"]
    assert records[1].features == {"age": 52.0, "city": "Lima"}
    assert records[0].outputs == {"label": 1, "probabilities": [0.2, 0.8]}
    assert (records[0].alias, records[0].shadow, records[0].version) == ("canary", True, 3)
    assert records[0].timestamp.isoformat() == "1970-01-01T00:00:00+00:00"

    positional = AnsweredRequest(
        "p", "m", 1, {"x": np.arange(6.0).reshape(3, 2)}, {"y": np.zeros(3)}, 1.0, 0.0
    )
    positional_event = CloudEvent.from_json(encode_batch([positional], source="/s")).payload_as(
        PredictionLogged
    )
    assert positional_event.features == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]


async def test_a_request_larger_than_a_batch_is_split_keeping_its_row_ids() -> None:
    bus = InMemoryBus()
    prediction_log = PredictionLog(bus, batch_size=4)
    await prediction_log.start()
    prediction_log.record(
        AnsweredRequest("big", "m", 1, {"x": np.arange(10.0).reshape(10, 1)}, {"y": np.zeros(10)}, 1.0, 0.0)
    )
    await prediction_log.stop()
    assert [event.rows for event in published(bus)] == [4, 4, 2]
    assert published_ids(bus) == ["big"] + [f"big:{row}" for row in range(1, 10)]


async def test_an_event_holds_at_most_max_requests_per_event_requests() -> None:
    bus = InMemoryBus()
    prediction_log = PredictionLog(bus, batch_size=2000, flush_interval_seconds=0.05)
    await prediction_log.start()
    count = 2 * MAX_REQUESTS_PER_EVENT + 7
    record_all(prediction_log, [prediction(number) for number in range(count)])
    await eventually(lambda: len(published_ids(bus)) == count, within=5, what="every prediction published")
    await prediction_log.stop()

    assert max(event.rows for event in published(bus)) == MAX_REQUESTS_PER_EVENT
    assert published_ids(bus) == [f"request-{number}" for number in range(count)]


async def test_an_event_larger_than_a_record_may_be_is_published_in_halves() -> None:
    bus = InMemoryBus()
    prediction_log = PredictionLog(bus, batch_size=1000, max_event_bytes=6000)
    await prediction_log.start()
    wide = np.arange(340 * 20, dtype=np.float64).reshape(340, 20)
    prediction_log.record(AnsweredRequest("wide", "m", 1, {"x": wide[:300]}, {"y": wide[:300, 0]}, 1.0, 0.0))
    for number in range(40):
        row = wide[300 + number : 301 + number]
        prediction_log.record(
            AnsweredRequest(f"request-{number}", "m", 1, {"x": row}, {"y": row[:, 0]}, 1.0, 0.0)
        )
    await prediction_log.stop()

    assert all(len(record.value) <= 6000 for record in bus.records(Topic.PREDICTION_LOGGED))
    assert published_ids(bus) == ["wide"] + [f"wide:{row}" for row in range(1, 300)] + [
        f"request-{number}" for number in range(40)
    ]
    assert prediction_log.fill == 0


async def test_a_prediction_that_can_never_be_published_is_dropped_and_the_rest_flow() -> None:
    bus = InMemoryBus()
    prediction_log = PredictionLog(bus, max_event_bytes=2000)
    dropped_before = metric("flywheel_serving_predictions_dropped_total", {"reason": "too_large"})
    await prediction_log.start()
    texts = np.array([["short"], ["x" * 5000], ["short too"]], dtype=object)  # the second is 5 KB alone
    for number in range(3):
        row = texts[number : number + 1]
        prediction_log.record(
            AnsweredRequest(f"request-{number}", "m", 1, {"text": row}, {"y": np.zeros(1)}, 1.0, 0.0)
        )
    await prediction_log.stop()

    assert published_ids(bus) == ["request-0", "request-2"]
    assert metric("flywheel_serving_predictions_dropped_total", {"reason": "too_large"}) - dropped_before == 1
    assert prediction_log.fill == 0


def sent_as(rows: np.ndarray) -> bytes:
    """Rows as a caller's JSON might write them (`[2.0e+00, ...], [...]`), never as the log would."""
    return b",".join(b"[" + b", ".join(b"%.1e" % value for value in row) + b"]" for row in rows)


def answered_with_text(request_id: str, rows: np.ndarray, text: bytes | None) -> AnsweredRequest:
    return AnsweredRequest(
        request_id, "m", 1, {"x": rows.astype(np.float32)}, {"y": rows[:, 0]}, 1.0, 0.0, rows_json=text
    )


def test_rows_sent_as_json_are_logged_as_sent_instead_of_formatted_again() -> None:
    first, second = np.arange(6.0).reshape(3, 2), np.arange(6.0, 10.0).reshape(2, 2)
    group = [answered_with_text("a", first, sent_as(first)), answered_with_text("b", second, sent_as(second))]

    value = encode_batch(group, source="/s")

    assert b"[0.0e+00, 1.0e+00],[2.0e+00, 3.0e+00]" in value
    logged = CloudEvent.from_json(value).payload_as(PredictionLogged)
    assert logged.features == np.concatenate([first, second]).tolist()
    assert [record.request_id for record in logged.records()] == ["a", "a:1", "a:2", "b", "b:1"]


def test_a_group_where_one_request_has_no_text_is_formatted_from_the_arrays() -> None:
    first, second = np.arange(6.0).reshape(3, 2), np.arange(6.0, 10.0).reshape(2, 2)
    group = [answered_with_text("a", first, sent_as(first)), answered_with_text("b", second, None)]

    value = encode_batch(group, source="/s")

    assert b"e+00" not in value
    assert (
        CloudEvent.from_json(value).payload_as(PredictionLogged).features
        == np.concatenate([first, second]).tolist()
    )


def test_named_feature_columns_are_formatted_from_the_arrays_even_with_a_text() -> None:
    column = np.arange(3.0).reshape(3, 1)
    value = encode_batch([answered_with_text("a", column, sent_as(column))], source="/s")
    assert b"e+00" not in value
    assert CloudEvent.from_json(value).payload_as(PredictionLogged).features == {"x": [0.0, 1.0, 2.0]}


async def test_the_parts_of_a_request_too_large_for_a_batch_are_formatted_from_the_arrays() -> None:
    bus = InMemoryBus()
    prediction_log = PredictionLog(bus, batch_size=4)
    await prediction_log.start()
    rows = np.arange(20.0).reshape(10, 2)
    prediction_log.record(answered_with_text("big", rows, sent_as(rows)))
    await prediction_log.stop()

    values = [record.value for record in bus.records(Topic.PREDICTION_LOGGED)]
    assert len(values) == 3
    assert all(b"e+00" not in value for value in values)
    assert [row for event in published(bus) for row in event.features] == rows.tolist()
