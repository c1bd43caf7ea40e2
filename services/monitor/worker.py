"""The monitor's Kafka consumers: predictions (one consumer group: a model's partition, and so its
windows, belongs to one replica at a time), ground truth, and a timer that closes windows whose period
has ended and writes the traffic of finished minutes.

Labels are joined with predictions in the replica that read them, so with several replicas ground truth
must be keyed by model name like `prediction-logged` (then both land on the same replica)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from services.monitor.drift_monitor import DriftMonitor
from shared.bus import EventBus
from shared.events import CloudEvent, GroundTruth, PredictionLogged, Topic

log = logging.getLogger(__name__)

PREDICTIONS_GROUP = "monitor-drift"
LABELS_GROUP = "monitor-labels"


class MonitorWorker:
    def __init__(self, monitor: DriftMonitor, window_check_seconds: float) -> None:
        self.monitor = monitor
        self.window_check_seconds = window_check_seconds

    async def handle_predictions(self, event: CloudEvent) -> None:
        await self.monitor.observe(event.payload_as(PredictionLogged))

    async def handle_ground_truth(self, event: CloudEvent) -> None:
        await self.monitor.observe_label(event.payload_as(GroundTruth))

    @contextlib.asynccontextmanager
    async def running(self, bus: EventBus) -> AsyncIterator[None]:
        await bus.subscribe(Topic.PREDICTION_LOGGED, PREDICTIONS_GROUP, self.handle_predictions)
        await bus.subscribe(Topic.GROUND_TRUTH, LABELS_GROUP, self.handle_ground_truth)
        timer = asyncio.create_task(self._close_due_windows(), name="monitor-windows")
        try:
            yield
        finally:
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
            with contextlib.suppress(Exception):  # best effort: the minute in progress
                await self.monitor.flush_traffic(datetime.now(UTC), everything=True)

    async def _close_due_windows(self) -> None:
        while True:
            await asyncio.sleep(self.window_check_seconds)
            try:
                await self.monitor.tick()
            except Exception:  # a failed judgement is retried at the next tick, never kills the timer
                log.exception("closing due windows failed")
