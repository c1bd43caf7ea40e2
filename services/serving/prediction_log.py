"""Prediction logging off the request path: a bounded in-memory buffer flushed to Kafka in batches.

`record` never awaits: it appends to a deque, so a slow or absent Kafka never slows an answer. A
flusher task wakes every `flush_interval_seconds`, or as soon as `batch_size` records are buffered,
and publishes everything buffered in batches of at most `batch_size` records. Each batch becomes one
`PredictionLogged` event per model in it, keyed by the model name, so one model's predictions stay in
order on one partition. A failed publish puts its records back at the front of the buffer and the
flusher retries with exponential backoff. Records that do not fit in `capacity` (counting those being
published) are dropped and counted; `stop` flushes what is left, within its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterable

from prometheus_client import Counter, Gauge

from shared.bus import EventBus
from shared.events import CloudEvent, PredictionLogged, PredictionRecord, Topic

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

BACKOFF_BASE_SECONDS = 0.1
BACKOFF_CAP_SECONDS = 5.0
DROP_WARNING_INTERVAL_SECONDS = 10.0


class PredictionLog:
    def __init__(
        self,
        bus: EventBus,
        *,
        capacity: int = 100_000,
        batch_size: int = 500,
        flush_interval_seconds: float = 0.2,
        source: str = "/flywheel/serving",
    ) -> None:
        if capacity < 1 or batch_size < 1 or flush_interval_seconds <= 0:
            raise ValueError("capacity and batch_size must be >= 1, flush_interval_seconds > 0")
        self.bus = bus
        self.capacity = capacity
        self.batch_size = batch_size
        self.flush_interval_seconds = flush_interval_seconds
        self.source = source
        self._buffer: deque[PredictionRecord] = deque()
        self._in_flight = 0  # taken from the buffer, not yet acknowledged: still counts towards capacity
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
        """Predictions not yet published: buffered plus the batch being published."""
        return len(self._buffer) + self._in_flight

    def record(self, record: PredictionRecord) -> None:
        """Buffer one prediction for publishing; drops it (counted) if the buffer is full."""
        if self._closed:
            self._drop(1, "shutdown")
            return
        if self.fill >= self.capacity:
            self._drop(1, "buffer_full")
            return
        self._buffer.append(record)
        # While publishes fail the flusher is backing off; waking it early would hammer Kafka.
        if self._wake is not None and len(self._buffer) >= self.batch_size and not self._failures:
            self._wake.set()

    def record_many(self, records: Iterable[PredictionRecord]) -> None:
        """Buffer several predictions, each as `record` would."""
        for record in records:
            self.record(record)

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
            batch = [self._buffer.popleft() for _ in range(min(self.batch_size, len(self._buffer)))]
            unpublished = _by_model(batch)
            self._in_flight = len(batch)
            try:
                while unpublished and await self._publish(unpublished[0]):
                    self._in_flight -= len(unpublished.pop(0))
            finally:
                # After a failure, or when stop() cancels a hung publish: back at the front, in order.
                for group in reversed(unpublished):
                    self._buffer.extendleft(reversed(group))
                self._in_flight = 0
            if unpublished:
                return
            self._failures = 0

    async def _publish(self, group: list[PredictionRecord]) -> bool:
        """Publish one model's records as one event; False (counted, logged) if the bus failed."""
        model = group[0].model
        event = CloudEvent.wrap(PredictionLogged(predictions=group), source=self.source, subject=model)
        try:
            await self.bus.publish(Topic.PREDICTION_LOGGED, event, key=model)
        except Exception as error:
            self._failures += 1
            PUBLISH_ERRORS.inc()
            log.warning(
                "publishing predictions failed, will retry",
                extra={
                    "model": model,
                    "records": len(group),
                    "failures": self._failures,
                    "error": repr(error),
                },
            )
            return False
        PREDICTIONS_LOGGED.inc(len(group))
        return True


def _by_model(batch: list[PredictionRecord]) -> list[list[PredictionRecord]]:
    """The batch split per model, keeping each model's records in order (one event, one key each)."""
    groups: dict[str, list[PredictionRecord]] = {}
    for record in batch:
        groups.setdefault(record.model, []).append(record)
    return list(groups.values())
