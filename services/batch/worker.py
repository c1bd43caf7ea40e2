"""The batch service's Kafka consumers besides the scoring stream: alias moves, so that the next batch
(or file job) resolving an alias is scored by the new version."""

from __future__ import annotations

import uuid

from services.batch.scoring import ScoringModels
from shared.bus import EventBus
from shared.events import CloudEvent, ModelPromoted, Topic


class BatchWorker:
    def __init__(self, models: ScoringModels) -> None:
        self.models = models

    async def subscribe(self, bus: EventBus) -> None:
        # Every replica must see every promotion: a group of its own, from now on (aliases of the past
        # are read from the registry when first needed).
        group = f"batch-{uuid.uuid4().hex[:12]}"
        await bus.subscribe(
            Topic.MODEL_PROMOTED, group, self.handle_model_promoted, new_group_starts_at="latest"
        )

    async def handle_model_promoted(self, event: CloudEvent) -> None:
        promoted = event.payload_as(ModelPromoted)
        self.models.promote(promoted.name, promoted.alias, promoted.version)
