"""The monitor service's own settings (FLYWHEEL_MONITOR_*)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.service import ServiceSettings


class MonitorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_MONITOR_", extra="ignore")

    port: int = 8084
    registry_url: str = Field(default="http://127.0.0.1:8081", description="where the registry answers")
    window_check_seconds: float = Field(
        default=5.0, gt=0, description="how often windows whose period has ended are closed"
    )

    # ---- Alert subscribers: webhook deliveries and the alert stream
    delivery_timeout_seconds: float = Field(
        default=10.0, gt=0, description="how long one webhook POST may take, answer included"
    )
    webhook_deny_internal_targets: bool = Field(
        default=True,
        description="refuse webhooks to hosts that are or resolve to loopback, private, link-local or other "
        "non-public addresses (server-side request forgery)",
    )
    webhook_allowed_targets: list[str] = Field(
        default_factory=list,
        description='hosts and networks webhooks may reach all the same, as JSON: ["hooks.internal", '
        '"10.1.0.0/16"]',
    )
    delivery_max_attempts: int = Field(
        default=8, ge=1, description="POSTs of one event to one webhook before its delivery fails"
    )
    delivery_backoff_seconds: float = Field(
        default=10.0, gt=0, description="wait before the first retry; doubles with each retry"
    )
    delivery_max_backoff_seconds: float = Field(default=3600.0, gt=0, description="the longest wait")
    delivery_poll_seconds: float = Field(
        default=5.0, gt=0, description="how often a replica looks for deliveries queued or due elsewhere"
    )
    delivery_concurrency: int = Field(default=16, ge=1, description="webhook POSTs one replica makes at once")
    delivery_retention_days: float = Field(
        default=30.0, gt=0, description="how long delivered and failed deliveries stay in the log"
    )
    alert_stream_queue_size: int = Field(
        default=100,
        ge=1,
        description="alerts waiting for one stream client; a client that falls further "
        "behind is disconnected",
    )
    alert_stream_keepalive_seconds: float = Field(
        default=10.0, gt=0, description="a comment line on an idle alert stream this often"
    )
    alert_stream_max_seconds: float = Field(
        default=15.0,
        gt=0,
        description="a stream ends after this long and its client reconnects (with Last-Event-ID nothing "
        "is missed): a stopping server never waits longer for its streams",
    )
    alert_stream_replay_size: int = Field(
        default=1000,
        ge=0,
        description="recent events kept to replay to a client reconnecting with Last-Event-ID",
    )
