"""Alert subscribers, wired into the monitor: the Kafka consumers that feed webhook deliveries and the
alert stream, the delivery worker, and what the routes find on `app.state.alerting`.

Followed topics: `drift-detected`, `retrain-requested`, `model-registered`, `model-promoted`. Each is read
twice: by the `monitor-deliveries-<topic>` consumer group, shared by the replicas, so that each event is
queued for its webhooks once (queuing is idempotent too: one delivery per subscription and event id);
and by groups of this replica's own (`monitor-alert-stream-<topic>-<replica>`), starting at the end of
the log, that feed its alert stream (every replica's clients see every event). Kafka consumers that want
alerts can simply read `drift-detected`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI

from services.monitor.alert_filters import ModelWorkspace, notice_of, with_workspace
from services.monitor.alert_stream import AlertHub
from services.monitor.deliveries import DeliveryWorker
from services.monitor.settings import MonitorSettings
from services.monitor.subscription_schemas import AlertTopic
from services.monitor.subscriptions import SubscriptionService
from services.monitor.webhook_targets import WebhookTargets
from shared.bus import EventBus, Handler, Subscription
from shared.events import CloudEvent
from shared.service import Runtime

DELIVERIES_GROUP = "monitor-deliveries"
STREAM_GROUP = "monitor-alert-stream"


@dataclass
class Alerting:
    """What the alert routes use."""

    subscriptions: SubscriptionService
    hub: AlertHub
    settings: MonitorSettings


async def subscribe_alert_fanout(
    bus: EventBus, subscriptions: SubscriptionService, hub: AlertHub, workspace_of: ModelWorkspace | None
) -> list[Subscription]:
    """Consume the followed topics: into webhook deliveries (one consumer group per topic, shared by the
    replicas, so that a rebalance of one does not pause the others), and into this replica's alert
    stream (groups of its own, one per topic, from now on), each event with its model's workspace."""

    def enqueue(topic: str) -> Handler:
        async def handle(event: CloudEvent) -> None:
            await subscriptions.enqueue(topic, event)

        return handle

    def stream(topic: str) -> Handler:
        async def handle(event: CloudEvent) -> None:
            hub.publish(topic, event, await with_workspace(notice_of(topic, event), workspace_of))

        return handle

    replica = uuid.uuid4().hex[:12]
    consumers = []
    for topic in AlertTopic:
        consumers.append(await bus.subscribe(topic, f"{DELIVERIES_GROUP}-{topic}", enqueue(topic)))
        consumers.append(
            await bus.subscribe(
                topic, f"{STREAM_GROUP}-{topic}-{replica}", stream(topic), new_group_starts_at="latest"
            )
        )
    return consumers


@asynccontextmanager
async def start_alerting(
    app: FastAPI, runtime: Runtime, settings: MonitorSettings, workspace_of: ModelWorkspace | None
) -> AsyncIterator[None]:
    """Run the alert subscribers for as long as the block: consumers, deliveries, the stream's hub.
    `workspace_of` says whose each event's model is (None: access control off, no workspaces apart)."""
    assert runtime.database is not None, "the monitor has tables, so its runtime has a database"
    targets = WebhookTargets(
        deny_internal=settings.webhook_deny_internal_targets, allowed=settings.webhook_allowed_targets
    )
    deliveries = DeliveryWorker(runtime.database, settings, targets=targets)
    subscriptions = SubscriptionService(
        runtime.database, targets, workspace_of=workspace_of, on_enqueued=deliveries.wake
    )
    hub = AlertHub(settings.alert_stream_queue_size, settings.alert_stream_replay_size)
    app.state.alerting = Alerting(subscriptions, hub, settings)
    await deliveries.start()
    consumers: list[Subscription] = []
    try:
        consumers = await subscribe_alert_fanout(runtime.bus, subscriptions, hub, workspace_of)
        yield
    finally:
        for consumer in consumers:
            await consumer.close()
        hub.close()
        await deliveries.stop()
