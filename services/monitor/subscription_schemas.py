"""The REST contracts of alert subscribers: subscriptions (webhooks) and their delivery log."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from services.monitor.webhook_targets import check_target_url
from shared.events import Name as ModelName
from shared.events import Severity, Topic


class AlertTopic(StrEnum):
    """What a subscription can follow: the monitor's alerts and retrain requests, and the registry's
    new and promoted versions (so that a CI system reacts to them without polling)."""

    DRIFT_DETECTED = Topic.DRIFT_DETECTED.value
    RETRAIN_REQUESTED = Topic.RETRAIN_REQUESTED.value
    MODEL_REGISTERED = Topic.MODEL_REGISTERED.value
    MODEL_PROMOTED = Topic.MODEL_PROMOTED.value


DeliveryStatus = Literal["pending", "delivered", "failed"]

MIN_SECRET_LENGTH = 16


# check_target_url raises a ValueError, which pydantic reports as a 422 on the field.
TargetUrl = Annotated[str, AfterValidator(check_target_url)]


class SubscriptionRequest(BaseModel):
    """A webhook that receives the events it follows, each signed with its secret."""

    model_config = ConfigDict(extra="forbid")

    url: TargetUrl = Field(examples=["https://ci.example.com/hooks/flywheel"])
    secret: str | None = Field(
        default=None,
        min_length=MIN_SECRET_LENGTH,
        max_length=256,
        description="signs every delivery (HMAC-SHA256 of the body); generated when left out. Shown only "
        "in the answer to this request",
    )
    event_types: list[AlertTopic] = Field(
        default_factory=lambda: [AlertTopic.DRIFT_DETECTED], min_length=1, description="topics it follows"
    )
    model: ModelName | None = Field(
        default=None, description="only this model's events; default: every model"
    )
    min_severity: Severity = Field(
        default=Severity.INFO, description="drift alerts below this severity are not sent"
    )
    description: str = Field(default="", max_length=500)


class Subscription(BaseModel):
    """A subscription as the API shows it: the secret only as its last characters."""

    id: str
    url: str
    event_types: list[AlertTopic]
    model: str | None
    min_severity: Severity
    description: str
    secret_hint: str = Field(description="the secret's last four characters, to tell secrets apart")
    workspace: str = Field(description="whose it is: its creator's workspace, whose models it hears of")
    created_at: datetime


class CreatedSubscription(Subscription):
    secret: str = Field(description="the signing secret: keep it, it is not shown again")


class SubscriptionPage(BaseModel):
    subscriptions: list[Subscription]
    next_page_token: str | None = None


class DeliveryAttempt(BaseModel):
    """One POST to the webhook: its HTTP status, or why there was none."""

    attempt: int
    started_at: datetime
    duration_ms: float
    status_code: int | None
    error: str | None


class Delivery(BaseModel):
    """One event on its way to one subscription: pending (next attempt at `next_attempt_at`), delivered
    (a 2xx answer), or failed (every attempt used)."""

    id: str
    subscription_id: str
    event_id: str
    event_type: str
    status: DeliveryStatus
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None
    attempt_log: list[DeliveryAttempt]


class DeliveryPage(BaseModel):
    deliveries: list[Delivery]
    next_page_token: str | None = None
