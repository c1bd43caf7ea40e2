"""The registry's Kafka consumers: one handler per topic it consumes."""

from __future__ import annotations

import logging

from services.registry.errors import InvalidRequest
from services.registry.model_registry import ModelRegistry
from services.registry.tracking import TrackingService
from shared.bus import EventBus
from shared.events import CloudEvent, InvalidEvent, RunCompleted, Topic

log = logging.getLogger(__name__)

CONSUMER_GROUP = "registry"


class RegistryWorker:
    def __init__(self, tracking: TrackingService, registry: ModelRegistry) -> None:
        self.tracking = tracking
        self.registry = registry

    async def subscribe(self, bus: EventBus) -> None:
        await bus.subscribe(Topic.RUN_COMPLETED, CONSUMER_GROUP, self.handle_run_completed)

    async def handle_run_completed(self, event: CloudEvent) -> None:
        """Record the run's outcome, then register its model: once per run, however often this arrives."""
        completed = event.payload_as(RunCompleted)
        try:
            await self.tracking.record_completed_run(completed)
            version = await self.registry.register_completed_run(completed)
        except InvalidRequest as error:  # e.g. a model name the registry refuses: retrying cannot help
            raise InvalidEvent(str(error)) from error
        if version is not None:
            log.info(
                "run registered",
                extra={
                    "run_id": completed.run_id,
                    "model": version.model_name,
                    "version": version.version,
                    "status": version.status,
                },
            )
