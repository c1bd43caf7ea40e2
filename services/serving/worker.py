"""Serving's Kafka consumers: alias moves and deletions (model-promoted) and traffic policy changes, so
that the next request is answered the new way. Every replica must see every event, so each has a consumer
group of its own, starting from now (the aliases and policies of the past are read from the registry when
a model is first asked for)."""

from __future__ import annotations

import logging
import uuid

from services.serving.models import ModelStore
from services.serving.traffic import TrafficPolicies
from shared.bus import EventBus
from shared.events import (
    AliasDeleted,
    CloudEvent,
    InvalidEvent,
    ModelPromoted,
    Topic,
    TrafficPolicyChanged,
    VersionsDeleted,
)
from shared.model_versions import ModelNotFound

log = logging.getLogger(__name__)


class ServingWorker:
    def __init__(self, models: ModelStore, traffic: TrafficPolicies) -> None:
        self.models = models
        self.traffic = traffic

    async def subscribe(self, bus: EventBus) -> None:
        # One group per topic: consumers of different topics sharing a group rebalance each other.
        replica = uuid.uuid4().hex[:12]
        await bus.subscribe(
            Topic.MODEL_PROMOTED,
            f"serving-{replica}",
            self.handle_alias_change,
            new_group_starts_at="latest",
        )
        await bus.subscribe(
            Topic.TRAFFIC_POLICY_CHANGED,
            f"serving-{replica}-traffic",
            self.handle_traffic_policy_changed,
            new_group_starts_at="latest",
        )

    async def handle_alias_change(self, event: CloudEvent) -> None:
        """model-promoted: an alias moved (load and warm the new version, then switch: a hot swap), an
        alias was deleted, or versions or a whole model were (what served them is forgotten)."""
        change = event.payload()
        if isinstance(change, ModelPromoted):
            try:
                await self.models.promote(change.name, change.alias, change.version)
            except ModelNotFound:
                log.warning(
                    "promoted version is gone", extra={"model": change.name, "version": change.version}
                )
        elif isinstance(change, AliasDeleted):
            self.models.forget_alias(change.name, change.alias)
        elif isinstance(change, VersionsDeleted):
            await self.models.forget_versions(change.name, change.versions)
            if change.model_deleted:
                self.traffic.forget(change.name)  # a model made again under the name starts without one
        else:  # the bus dead-letters it
            raise InvalidEvent(f"{Topic.MODEL_PROMOTED} carries no {event.type} events")

    async def handle_traffic_policy_changed(self, event: CloudEvent) -> None:
        changed = event.payload_as(TrafficPolicyChanged)
        self.traffic.apply(changed.name, changed.policy)
        log.info("traffic policy changed", extra={"model": changed.name, "policy": changed.policy})
