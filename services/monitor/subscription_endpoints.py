"""Alert subscribers' routes: webhook subscriptions, their delivery log, and the alert stream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from services.monitor.alert_filters import AlertFilter
from services.monitor.alert_stream import event_stream
from services.monitor.alerting import Alerting
from services.monitor.subscription_schemas import (
    AlertTopic,
    CreatedSubscription,
    Delivery,
    DeliveryPage,
    DeliveryStatus,
    Subscription,
    SubscriptionPage,
    SubscriptionRequest,
)
from services.monitor.subscriptions import SubscriptionNotFound
from services.monitor.webhook_targets import InvalidTargetUrl
from services.monitor.workspaces import CallerScope
from shared.auth import Permission, Principal, require
from shared.events import Severity
from shared.pagination import InvalidPageToken
from shared.service import InvalidInput


class Problem(BaseModel):
    detail: str


async def alerting(request: Request) -> Alerting:
    found: Alerting = request.app.state.alerting
    return found


AlertingDependency = Annotated[Alerting, Depends(alerting)]
PageSize = Annotated[int, Query(ge=1, le=1000)]
ERRORS: dict[int | str, dict[str, Any]] = {
    **{status: {"model": Problem} for status in (400, 404)},
    422: {"model": InvalidInput},
}

router = APIRouter(tags=["alert subscribers"], responses=ERRORS)
# The app guards the router (READ, MONITOR). A subscription is its creator's workspace's: seen only from
# there (another's reads as missing), hearing only of that workspace's models; so is the alert stream.
Subscriber = Annotated[Principal, Depends(require(Permission.MONITOR))]

T = TypeVar("T")


async def _answer(work: Awaitable[T]) -> T:
    """What the service answers, with its refusals as HTTP errors."""
    try:
        return await work
    except SubscriptionNotFound as error:
        raise HTTPException(404, str(error)) from error
    except InvalidPageToken as error:
        raise HTTPException(400, str(error)) from error


@router.post("/subscriptions", status_code=201)
async def create_subscription(
    body: SubscriptionRequest, alerts: AlertingDependency, principal: Subscriber
) -> CreatedSubscription:
    """Subscribe a webhook to `drift-detected` (the default), `retrain-requested`, `model-registered` and
    `model-promoted` events, optionally of one `model` and, for drift alerts, of at least `min_severity`.
    Each event is POSTed as a CloudEvent signed with the secret (`X-Flywheel-Signature: sha256=<hex
    HMAC-SHA256 of the body>`), retried with back-off until a 2xx answer. The answer is the only one that
    shows the secret (generated when none is given). A URL naming a loopback, private or link-local address
    is a 422 unless the monitor's allow-list has it. The subscription is the caller's workspace's and hears
    only of its models."""
    try:
        return await alerts.subscriptions.create(body, principal.home_workspace)
    except InvalidTargetUrl as error:
        raise HTTPException(422, str(error)) from error


@router.get("/subscriptions")
async def list_subscriptions(
    alerts: AlertingDependency, scope: CallerScope, page_size: PageSize = 100, page_token: str | None = None
) -> SubscriptionPage:
    """The caller's workspace's subscriptions, newest first; secrets only as their last four characters."""
    return await _answer(alerts.subscriptions.list_subscriptions(page_size, page_token, scope))


@router.get("/subscriptions/{subscription_id}")
async def get_subscription(
    subscription_id: str, alerts: AlertingDependency, scope: CallerScope
) -> Subscription:
    """One subscription."""
    return await _answer(alerts.subscriptions.get(subscription_id, scope))


@router.delete("/subscriptions/{subscription_id}", status_code=204)
async def delete_subscription(subscription_id: str, alerts: AlertingDependency, scope: CallerScope) -> None:
    """Stop sending to the webhook (deliveries still queued are dropped) and forget its delivery log."""
    await _answer(alerts.subscriptions.delete(subscription_id, scope))


@router.get("/subscriptions/{subscription_id}/deliveries")
async def list_deliveries(
    subscription_id: str,
    alerts: AlertingDependency,
    scope: CallerScope,
    status: DeliveryStatus | None = None,
    page_size: PageSize = 100,
    page_token: str | None = None,
) -> DeliveryPage:
    """The delivery log, newest first: each event sent (or being sent) to the webhook, its status, and
    every attempt with the webhook's status code or the error."""
    return await _answer(
        alerts.subscriptions.deliveries(subscription_id, status, page_size, page_token, scope)
    )


@router.post("/subscriptions/{subscription_id}/test", status_code=202)
async def test_subscription(subscription_id: str, alerts: AlertingDependency, scope: CallerScope) -> Delivery:
    """Send the webhook a signed ping event (type `io.flywheel.subscription.ping.v1`), delivered and
    logged like any other; follow it in the delivery log."""
    return await _answer(alerts.subscriptions.ping(subscription_id, scope))


@router.get(
    "/alerts/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "server-sent events"}},
)
async def stream_alerts(
    alerts: AlertingDependency,
    scope: CallerScope,
    types: Annotated[
        list[str] | None,
        Query(description="topics to follow, repeated or comma-separated; default: drift-detected"),
    ] = None,
    model: str | None = None,
    min_severity: Severity = Severity.INFO,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Server-sent events of new alerts as they happen: each `id` is the CloudEvent's id, `event` its topic,
    `data` the CloudEvent JSON, of the caller's workspace's models only. Comments keep an idle stream
    alive. The stream ends now and then and the client reconnects; with `Last-Event-ID` it gets the
    events it missed meanwhile."""
    topics = _topics(types)
    settings = alerts.settings
    body: AsyncIterator[bytes] = event_stream(
        alerts.hub,
        AlertFilter.of(topics, model, min_severity, scope),
        last_event_id=last_event_id,
        keepalive_seconds=settings.alert_stream_keepalive_seconds,
        max_seconds=settings.alert_stream_max_seconds,
    )
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


def _topics(types: list[str] | None) -> list[AlertTopic]:
    names = [name.strip() for value in types or [] for name in value.split(",") if name.strip()]
    followable = [topic.value for topic in AlertTopic]
    if unknown := [name for name in names if name not in followable]:
        raise HTTPException(422, f"unknown topic(s) {unknown}; the stream follows {', '.join(followable)}")
    return [AlertTopic(name) for name in names] or [AlertTopic.DRIFT_DETECTED]
