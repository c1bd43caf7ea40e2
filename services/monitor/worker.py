"""The monitor's Kafka consumers: predictions (one consumer group: a model's partition, and so its
windows, belongs to one replica at a time) and a timer that closes windows whose period has ended."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from services.monitor.drift_monitor import DriftMonitor
from shared.bus import EventBus
from shared.events import CloudEvent, PredictionLogged, Topic

log = logging.getLogger(__name__)

PREDICTIONS_GROUP = "monitor-drift"


class MonitorWorker:
    def __init__(self, monitor: DriftMonitor, window_check_seconds: float) -> None:
        self.monitor = monitor
        self.window_check_seconds = window_check_seconds

    async def handle_predictions(self, event: CloudEvent) -> None:
        await self.monitor.observe(event.payload_as(PredictionLogged))

    @contextlib.asynccontextmanager
    async def running(self, bus: EventBus) -> AsyncIterator[None]:
        await bus.subscribe(Topic.PREDICTION_LOGGED, PREDICTIONS_GROUP, self.handle_predictions)
        timer = asyncio.create_task(self._close_due_windows(), name="monitor-windows")
        try:
            yield
        finally:
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer

    async def _close_due_windows(self) -> None:
        while True:
            await asyncio.sleep(self.window_check_seconds)
            try:
                await self.monitor.tick()
            except Exception:  # a failed judgement is retried at the next tick, never kills the timer
                log.exception("closing due windows failed")
