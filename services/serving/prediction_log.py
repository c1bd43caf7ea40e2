"""Prediction logging off the request path: a bounded in-memory buffer flushed to Kafka in batches.

`record` never awaits: it appends the answered request (its arrays, as they are) to a deque, so a slow or
absent Kafka never slows an answer, and the request path pays nothing per row. A flusher task wakes every
`flush_interval_seconds`, or as soon as `batch_size` rows are buffered, and publishes them in batches of at
most `batch_size` rows and `MAX_REQUESTS_PER_EVENT` requests: one columnar `PredictionLogged` event per model
version in the batch, keyed by the model name, so one model's predictions stay in order on one partition. An
event larger than a Kafka record may be (`shared.bus.MAX_RECORD_BYTES`: a wide model's rows) is published in
halves instead; one prediction too large alone, or one that cannot be encoded, is dropped (counted, logged):
retrying either would stop all logging. A failed publish puts its requests back at the front of the buffer
and the flusher retries with exponential backoff. Rows that do not fit in `capacity` (counting those being
published) are dropped and counted; `stop` flushes what is left, within its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from prometheus_client import Counter, Gauge

from shared.bus import MAX_RECORD_BYTES, EventBus
from shared.events import Topic
from shared.prediction_events import logged_request, prediction_logged_json

log = logging.getLogger(__name__)

PREDICTIONS_LOGGED = Counter(
    "flywheel_serving_predictions_logged_total", "Predictions published to the prediction-logged topic"
)
PREDICTIONS_DROPPED = Counter(
    "flywheel_serving_predictions_dropped_total", "Predictions never published", ["reason"]
)
PUBLISH_ERRORS = Counter(
    "flywheel_serving_prediction_log_errors_total", "Failed publishes of a prediction batch (retried)"
)
BUFFERED = Gauge(
    "flywheel_serving_prediction_log_buffered",
    "Predictions waiting to be published",
    multiprocess_mode="livesum",
)

# An event's JSON is built on the event loop, at about 2 µs a request: one event of 2,000 one-row requests
# held every answer up for 4.5 ms, a visible share of the p99 at 64 concurrent callers. So an event holds at
# most this many requests (0.6 ms); many-row requests still fill events of `batch_size` rows.
MAX_REQUESTS_PER_EVENT = 250

BACKOFF_BASE_SECONDS = 0.1
BACKOFF_CAP_SECONDS = 5.0
DROP_WARNING_INTERVAL_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class AnsweredRequest:
    """One answered request as the request path hands it over: whole arrays (rows first), not rows.
    Its rows are logged as request ids `<id>`, `<id>:1`, `<id>:2`, ... (`first_row` > 0 for a part of a
    request too large for one batch)."""

    request_id: str
    model: str
    version: int
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    latency_ms: float
    timestamp: float  # time.time() when answered
    alias: str | None = None
    shadow: bool = False
    first_row: int = 0
    rows_json: bytes | None = None  # the inputs' rows as the request's JSON sent them (v1), if read so

    @property
    def rows(self) -> int:
        return len(next(iter(self.inputs.values())))

    def split(self, rows: int) -> list[AnsweredRequest]:
        """Parts of at most `rows` rows (array views: nothing is copied)."""
        return [
            AnsweredRequest(
                self.request_id,
                self.model,
                self.version,
                {name: array[start : start + rows] for name, array in self.inputs.items()},
                {name: array[start : start + rows] for name, array in self.outputs.items()},
                self.latency_ms,
                self.timestamp,
                self.alias,
                self.shadow,
                self.first_row + start,
                self.rows_json if rows >= self.rows else None,  # a part's rows are not found in the text
            )
            for start in range(0, self.rows, rows)
        ]

    @property
    def batch_key(self) -> tuple[str, int, str | None, bool]:
        """Requests with the same key share one event."""
        return self.model, self.version, self.alias, self.shadow


def encode_batch(group: list[AnsweredRequest], source: str) -> bytes:
    """One `PredictionLogged` event (JSON) for requests of one batch key: their arrays concatenated,
    written in columns (see `shared.prediction_events`)."""
    first = group[0]
    return prediction_logged_json(
        model=first.model,
        version=first.version,
        alias=first.alias,
        shadow=first.shadow,
        requests=[
            logged_request(
                answered.request_id,
                answered.rows,
                answered.latency_ms,
                datetime.fromtimestamp(answered.timestamp, UTC),
                answered.first_row,
            )
            for answered in group
        ],
        inputs={name: _concatenated(group, "inputs", name) for name in first.inputs},
        outputs={name: _concatenated(group, "outputs", name) for name in first.outputs},
        source=source,
        rows_json=_rows_json(group),
    )


def _rows_json(group: list[AnsweredRequest]) -> list[bytes] | None:
    """The requests' rows as their JSON sent them, if every one has them."""
    texts = [answered.rows_json for answered in group if answered.rows_json is not None]
    return texts if len(texts) == len(group) else None


def _concatenated(group: list[AnsweredRequest], side: str, name: str) -> np.ndarray:
    arrays = [getattr(answered, side)[name] for answered in group]
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


class PredictionLog:
    def __init__(
        self,
        bus: EventBus,
        *,
        capacity: int = 100_000,
        batch_size: int = 500,
        flush_interval_seconds: float = 0.2,
        source: str = "/flywheel/serving",
        max_event_bytes: int = MAX_RECORD_BYTES,
    ) -> None:
        if capacity < 1 or batch_size < 1 or flush_interval_seconds <= 0:
            raise ValueError("capacity and batch_size must be >= 1, flush_interval_seconds > 0")
        self.bus = bus
        self.capacity = capacity
        self.batch_size = batch_size
        self.flush_interval_seconds = flush_interval_seconds
        self.source = source
        self.max_event_bytes = max_event_bytes  # larger events are published in halves
        self._buffer: deque[AnsweredRequest] = deque()
        self._buffered_rows = 0
        self._in_flight = 0  # rows taken from the buffer, not yet acknowledged: still count towards capacity
        self._failures = 0  # consecutive failed publishes; drives the backoff
        self._wake: asyncio.Event | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._stopping = False
        self._closed = False
        self._dropped_since_warning = 0
        self._last_drop_warning = float("-inf")

    async def start(self) -> None:
        """Create the loop-bound objects and the flusher (in the app's lifespan, not per request)."""
        self._wake = asyncio.Event()
        self._stopping = False
        self._closed = False
        self._flusher = asyncio.create_task(self._flush_forever(), name="prediction-log")

    @property
    def fill(self) -> int:
        """Predictions (rows) not yet published: buffered plus the batch being published."""
        return self._buffered_rows + self._in_flight

    def record(self, answered: AnsweredRequest) -> None:
        """Buffer a request's predictions for publishing; drops them (counted) if they do not fit."""
        rows = answered.rows
        if self._closed:
            self._drop(rows, "shutdown")
            return
        if self.fill + rows > self.capacity:
            self._drop(rows, "buffer_full")
            return
        if rows > self.batch_size:
            self._buffer.extend(answered.split(self.batch_size))
        else:
            self._buffer.append(answered)
        self._buffered_rows += rows
        # While publishes fail the flusher is backing off; waking it early would hammer Kafka.
        if self._wake is not None and self._buffered_rows >= self.batch_size and not self._failures:
            self._wake.set()

    # A shutdown budget owned by the log (it must count what it could not flush), not a caller's deadline.
    async def stop(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Publish everything buffered, giving up after `timeout` seconds; what is left is dropped."""
        flusher, self._flusher = self._flusher, None
        if flusher is None or self._wake is None:
            return
        self._stopping = True
        self._wake.set()  # flush now, and retry at once if Kafka was failing
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await flusher  # on timeout the flusher is cancelled too, putting its batch back
        self._closed = True
        left = self.fill
        if left:
            # A cancelled publish may still have reached Kafka: these are "maybe lost", not surely.
            log.error(
                "prediction log stopped with unpublished predictions",
                extra={"dropped": left, "timeout_s": timeout},
            )
            self._drop(left, "shutdown")
            self._buffer.clear()
            self._buffered_rows = 0
        BUFFERED.set(self.fill)

    def _drop(self, count: int, reason: str) -> None:
        PREDICTIONS_DROPPED.labels(reason).inc(count)
        if reason != "buffer_full":
            return
        # A storm of drops logs one line per interval, with the count, instead of one per request.
        self._dropped_since_warning += count
        now = time.monotonic()
        if now - self._last_drop_warning >= DROP_WARNING_INTERVAL_SECONDS:
            log.warning(
                "prediction log buffer full, dropping predictions",
                extra={"dropped": self._dropped_since_warning, "capacity": self.capacity},
            )
            self._last_drop_warning = now
            self._dropped_since_warning = 0

    async def _flush_forever(self) -> None:
        assert self._wake is not None
        while True:
            if self._failures:
                delay = min(BACKOFF_BASE_SECONDS * 2 ** (self._failures - 1), BACKOFF_CAP_SECONDS)
            else:
                delay = self.flush_interval_seconds
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            self._wake.clear()
            await self._drain()
            BUFFERED.set(self.fill)
            if self._stopping and not self._buffer:
                return

    async def _drain(self) -> None:
        """Publish batches until the buffer is empty or a publish fails."""
        while self._buffer:
            batch = [self._buffer.popleft()]  # each part is at most batch_size rows (see record)
            rows = batch[0].rows
            while (
                self._buffer
                and rows + self._buffer[0].rows <= self.batch_size
                and len(batch) < MAX_REQUESTS_PER_EVENT
            ):
                rows += self._buffer[0].rows
                batch.append(self._buffer.popleft())
            self._buffered_rows -= rows
            unpublished = _by_batch_key(batch)
            self._in_flight = rows
            try:
                while unpublished:
                    group = unpublished[0]
                    value = self._encode(group)
                    if value is not None and len(value) > self.max_event_bytes:
                        if len(group) > 1 or group[0].rows > 1:
                            # Kafka would refuse it however often it were retried: publish it in halves.
                            unpublished[0:1] = _halves(group)
                            continue
                        self._drop_unpublishable(group, "too_large", f"{len(value)} bytes for one prediction")
                        value = None
                    if value is None:
                        self._in_flight -= sum(answered.rows for answered in unpublished.pop(0))
                        continue
                    if not await self._publish(group, value):
                        break
                    self._in_flight -= sum(answered.rows for answered in unpublished.pop(0))
            finally:
                # After a failure, or when stop() cancels a hung publish: back at the front, in order.
                for group in reversed(unpublished):
                    self._buffer.extendleft(reversed(group))
                    self._buffered_rows += sum(answered.rows for answered in group)
                self._in_flight = 0
            if unpublished:
                return
            self._failures = 0

    def _encode(self, group: list[AnsweredRequest]) -> bytes | None:
        """The group's event; None (its rows dropped, counted and logged) when it cannot be encoded."""
        try:
            return encode_batch(group, self.source)
        except Exception as error:
            self._drop_unpublishable(group, "unencodable", repr(error))
            return None

    def _drop_unpublishable(self, group: list[AnsweredRequest], reason: str, detail: str) -> None:
        """Predictions no retry could publish: dropped, counted under `reason` and logged."""
        rows = sum(answered.rows for answered in group)
        self._drop(rows, reason)
        log.error(
            "predictions that can never be published are dropped",
            extra={"model": group[0].model, "records": rows, "reason": reason, "error": detail},
        )

    async def _publish(self, group: list[AnsweredRequest], value: bytes) -> bool:
        """Publish one batch key's predictions (`value`, their event); False (counted, logged) if the bus
        failed."""
        model = group[0].model
        rows = sum(answered.rows for answered in group)
        try:
            await self.bus.publish_raw(Topic.PREDICTION_LOGGED, value, key=model.encode())
        except Exception as error:
            self._failures += 1
            PUBLISH_ERRORS.inc()
            log.warning(
                "publishing predictions failed, will retry",
                extra={
                    "model": model,
                    "records": rows,
                    "failures": self._failures,
                    "error": repr(error),
                },
            )
            return False
        PREDICTIONS_LOGGED.inc(rows)
        return True


def _halves(group: list[AnsweredRequest]) -> list[list[AnsweredRequest]]:
    """The group in two, in order: its requests, or the rows of its one request."""
    if len(group) > 1:
        return [group[: len(group) // 2], group[len(group) // 2 :]]
    (answered,) = group
    return [[part] for part in answered.split((answered.rows + 1) // 2)]


def _by_batch_key(batch: list[AnsweredRequest]) -> list[list[AnsweredRequest]]:
    """The batch split per model version (and alias and shadow role), keeping each one's requests in
    order: one event each, keyed by the model, so a model's predictions stay in order on one partition."""
    groups: dict[tuple[str, int, str | None, bool], list[AnsweredRequest]] = {}
    for answered in batch:
        groups.setdefault(answered.batch_key, []).append(answered)
    return list(groups.values())
