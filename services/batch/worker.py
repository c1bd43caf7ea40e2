"""The batch service's Kafka consumers besides the scoring stream: alias moves and deletions (model-promoted),
so that the next batch (or file job) resolving an alias is scored by the new version, or refused."""

from __future__ import annotations

import uuid

from services.batch.scoring import ScoringModels
from shared.bus import EventBus
from shared.events import AliasDeleted, CloudEvent, InvalidEvent, ModelPromoted, Topic, VersionsDeleted


class BatchWorker:
    def __init__(self, models: ScoringModels) -> None:
        self.models = models

    async def subscribe(self, bus: EventBus) -> None:
        # Every replica must see every promotion: a group of its own, from now on (aliases of the past
        # are read from the registry when first needed).
        group = f"batch-{uuid.uuid4().hex[:12]}"
        await bus.subscribe(
            Topic.MODEL_PROMOTED, group, self.handle_alias_change, new_group_starts_at="latest"
        )

    async def handle_alias_change(self, event: CloudEvent) -> None:
        change = event.payload()
        if isinstance(change, ModelPromoted):
            self.models.promote(change.name, change.alias, change.version)
        elif isinstance(change, AliasDeleted):
            self.models.forget_alias(change.name, change.alias)
        elif isinstance(change, VersionsDeleted):
            self.models.forget_versions(change.name, change.versions)
        else:  # the bus dead-letters it
            raise InvalidEvent(f"{Topic.MODEL_PROMOTED} carries no {event.type} events")
