"""Alert subscriptions: webhooks that follow the monitor's alerts and the registry's model events.

A subscription names a URL, a secret, the topics it follows and optionally a model and a minimum
severity; it belongs to its creator's workspace, is seen only from there, and hears only of that
workspace's models. Each event read from a followed topic is queued once per subscription whose filter
accepts it (`enqueue`); the delivery worker (`services.monitor.deliveries`) sends what is queued.

Methods that take a `workspace` find only that workspace's subscriptions (None: any workspace's); another
workspace's reads as missing.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import asyncpg

from services.monitor import subscription_repository as repository
from services.monitor.alert_filters import ModelWorkspace, notice_of, with_workspace
from services.monitor.subscription_schemas import (
    CreatedSubscription,
    Delivery,
    DeliveryPage,
    DeliveryStatus,
    Subscription,
    SubscriptionPage,
    SubscriptionRequest,
)
from services.monitor.webhook_targets import WebhookTargets
from shared.auth import DEFAULT_WORKSPACE
from shared.events import CloudEvent
from shared.pagination import decode_page_token, next_page_token

log = logging.getLogger(__name__)

EVENT_SOURCE = "/flywheel/monitor"
PING_EVENT_TYPE = "io.flywheel.subscription.ping.v1"


class SubscriptionNotFound(LookupError):
    pass


class SubscriptionService:
    """Subscriptions and their delivery log over the monitor's database. `workspace_of` says whose an
    event's model is (None: access control off, every subscription hears of every model); `on_enqueued`
    is told when deliveries were queued, so that they go out now rather than at the next poll."""

    def __init__(
        self,
        database: asyncpg.Pool,
        targets: WebhookTargets,
        *,
        workspace_of: ModelWorkspace | None = None,
        on_enqueued: Callable[[], None] = lambda: None,
    ) -> None:
        self.database = database
        self.targets = targets
        self.workspace_of = workspace_of
        self.on_enqueued = on_enqueued

    async def create(
        self, request: SubscriptionRequest, workspace: str = DEFAULT_WORKSPACE
    ) -> CreatedSubscription:
        """A subscription of `workspace`. InvalidTargetUrl for a URL that names an address webhooks may not
        reach (names are resolved, and checked again, at every delivery)."""
        self.targets.check_url(request.url)
        async with self.database.acquire() as connection:
            created = await repository.insert_subscription(
                connection,
                url=request.url,
                secret=request.secret or secrets.token_urlsafe(32),
                event_types=[str(topic) for topic in dict.fromkeys(request.event_types)],
                model=request.model,
                min_severity=str(request.min_severity),
                description=request.description,
                workspace=workspace,
            )
        log.info(
            "subscription created",
            extra={"subscription_id": created.id, "event_types": created.event_types, "model": created.model},
        )
        return created

    async def get(self, subscription_id: str, workspace: str | None = None) -> Subscription:
        async with self.database.acquire() as connection:
            subscription = await repository.get_subscription(connection, subscription_id, workspace)
        if subscription is None:
            raise SubscriptionNotFound(f"no subscription {subscription_id!r}")
        return subscription

    async def list_subscriptions(
        self, page_size: int, page_token: str | None, workspace: str | None = None
    ) -> SubscriptionPage:
        offset = decode_page_token(page_token)
        async with self.database.acquire() as connection:
            found = await repository.list_subscriptions(connection, page_size + 1, offset, workspace)
        return SubscriptionPage(
            subscriptions=found[:page_size], next_page_token=next_page_token(offset, page_size, len(found))
        )

    async def delete(self, subscription_id: str, workspace: str | None = None) -> None:
        """Stop sending to the subscription, and forget its delivery log."""
        async with self.database.acquire() as connection:
            if not await repository.delete_subscription(connection, subscription_id, workspace):
                raise SubscriptionNotFound(f"no subscription {subscription_id!r}")
        log.info("subscription deleted", extra={"subscription_id": subscription_id})

    async def deliveries(
        self,
        subscription_id: str,
        status: DeliveryStatus | None,
        page_size: int,
        page_token: str | None,
        workspace: str | None = None,
    ) -> DeliveryPage:
        """The subscription's delivery log, newest first."""
        offset = decode_page_token(page_token)
        async with self.database.acquire() as connection:
            if await repository.get_subscription(connection, subscription_id, workspace) is None:
                raise SubscriptionNotFound(f"no subscription {subscription_id!r}")
            found = await repository.list_deliveries(
                connection, subscription_id, status, page_size + 1, offset
            )
        return DeliveryPage(
            deliveries=found[:page_size], next_page_token=next_page_token(offset, page_size, len(found))
        )

    async def enqueue(self, topic: str, event: CloudEvent) -> int:
        """Queue `event`, read from `topic`, for every subscription that wants it, once however often it
        arrives; how many deliveries were queued now."""
        notice = notice_of(topic, event)
        async with self.database.acquire() as connection:
            filters = await repository.filters_following(connection, topic)
        if not filters:
            return 0
        if self.workspace_of is None:  # access control off: no workspaces to keep apart
            filters = {
                subscription: replace(accepts, workspace=None) for subscription, accepts in filters.items()
            }
        else:  # only subscriptions of the model's workspace hear of it (none, for a model since deleted)
            notice = await with_workspace(notice, self.workspace_of)
        wanted = [subscription for subscription, accepts in filters.items() if accepts.accepts(notice)]
        if not wanted:
            return 0
        async with self.database.acquire() as connection:
            queued = await repository.enqueue_deliveries(
                connection, wanted, event.id, event.type, event.to_json()
            )
        if queued:
            log.info(
                "deliveries queued",
                extra={"event_id": event.id, "event_type": event.type, "deliveries": len(queued)},
            )
            self.on_enqueued()
        return len(queued)

    async def ping(self, subscription_id: str, workspace: str | None = None) -> Delivery:
        """Queue a ping event for the subscription (delivered, signed and logged like any other), so that
        whoever set up the webhook can see it work."""
        await self.get(subscription_id, workspace)
        ping = CloudEvent(
            source=EVENT_SOURCE,
            type=PING_EVENT_TYPE,
            subject=subscription_id,
            data={"subscription_id": subscription_id, "sent_at": datetime.now(UTC).isoformat()},
        )
        async with self.database.acquire() as connection:
            queued = await repository.enqueue_deliveries(
                connection, [subscription_id], ping.id, ping.type, ping.to_json()
            )
            delivery = await repository.get_delivery(connection, queued[0]) if queued else None
        if delivery is None:
            raise SubscriptionNotFound(f"no subscription {subscription_id!r}")
        self.on_enqueued()
        return delivery
