"""Serving's Kafka consumer: alias moves, so that the next request is answered by the new version."""

from __future__ import annotations

import logging
import uuid

from services.serving.models import ModelNotFound, ModelStore
from shared.bus import EventBus
from shared.events import CloudEvent, ModelPromoted, Topic

log = logging.getLogger(__name__)


class ServingWorker:
    def __init__(self, models: ModelStore) -> None:
        self.models = models

    async def subscribe(self, bus: EventBus) -> None:
        # Every replica must see every promotion, so each has a group of its own, starting from now (the
        # aliases of the past are read from the registry when a model is first asked for).
        group = f"serving-{uuid.uuid4().hex[:12]}"
        await bus.subscribe(
            Topic.MODEL_PROMOTED, group, self.handle_model_promoted, new_group_starts_at="latest"
        )

    async def handle_model_promoted(self, event: CloudEvent) -> None:
        """Load and warm the new version, then switch the alias to it (a hot swap)."""
        promoted = event.payload_as(ModelPromoted)
        try:
            await self.models.promote(promoted.name, promoted.alias, promoted.version)
        except ModelNotFound:
            log.warning(
                "promoted version is gone", extra={"model": promoted.name, "version": promoted.version}
            )
