"""SQL for alert subscriptions and their delivery log."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from services.monitor.alert_filters import AlertFilter
from services.monitor.subscription_schemas import (
    CreatedSubscription,
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    Subscription,
)
from shared.db import Connection
from shared.events import Severity

SUBSCRIPTION_COLUMNS = (
    "id, url, event_types, model, min_severity, description, '…' || right(secret, 4) AS secret_hint, "
    "workspace, created_at"
)
DELIVERY_COLUMNS = (
    "id, subscription_id, event_id, event_type, status, attempts, last_status_code, last_error, "
    "CASE WHEN status = 'pending' THEN next_attempt_at END AS next_attempt_at, created_at, updated_at, "
    "delivered_at"
)


@dataclass(frozen=True)
class ClaimedDelivery:
    """A delivery this replica now holds for one attempt, with what it needs to send it."""

    id: str
    subscription_id: str
    event_id: str
    event_type: str
    body: bytes
    attempt: int
    url: str
    secret: str

    def __repr__(self) -> str:  # never the secret, should a delivery end up in a log
        return f"ClaimedDelivery(id={self.id!r}, attempt={self.attempt}, event_type={self.event_type!r})"


@dataclass(frozen=True)
class AttemptOutcome:
    """How one attempt ended: `status` is where the delivery goes next."""

    status: DeliveryStatus
    started_at: datetime
    duration_ms: float
    status_code: int | None
    error: str | None
    retry_in_seconds: float = 0.0


def _subscription(row: asyncpg.Record) -> Subscription:
    return Subscription(**dict(row))


async def insert_subscription(
    connection: Connection,
    *,
    url: str,
    secret: str,
    event_types: list[str],
    model: str | None,
    min_severity: str,
    description: str,
    workspace: str,
) -> CreatedSubscription:
    row = await connection.fetchrow(
        "INSERT INTO subscriptions (url, secret, event_types, model, min_severity, description, workspace) "
        f"VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {SUBSCRIPTION_COLUMNS}, secret",
        url,
        secret,
        event_types,
        model,
        min_severity,
        description,
        workspace,
    )
    assert row is not None
    return CreatedSubscription(**dict(row))


# In every query below, `workspace` None means any workspace's subscription.


async def get_subscription(
    connection: Connection, subscription_id: str, workspace: str | None
) -> Subscription | None:
    row = await connection.fetchrow(
        f"SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions "
        "WHERE id = $1 AND ($2::text IS NULL OR workspace = $2)",
        subscription_id,
        workspace,
    )
    return _subscription(row) if row else None


async def list_subscriptions(
    connection: Connection, limit: int, offset: int, workspace: str | None
) -> list[Subscription]:
    rows = await connection.fetch(
        f"SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE ($3::text IS NULL OR workspace = $3) "
        "ORDER BY created_at DESC, id LIMIT $1 OFFSET $2",
        limit,
        offset,
        workspace,
    )
    return [_subscription(row) for row in rows]


async def delete_subscription(connection: Connection, subscription_id: str, workspace: str | None) -> bool:
    """Delete the subscription and its delivery log; False when there was none."""
    result = await connection.execute(
        "DELETE FROM subscriptions WHERE id = $1 AND ($2::text IS NULL OR workspace = $2)",
        subscription_id,
        workspace,
    )
    return result == "DELETE 1"


async def filters_following(connection: Connection, topic: str) -> dict[str, AlertFilter]:
    """The filter of every subscription that follows `topic`, by subscription id: each hears only of its
    workspace's models."""
    rows = await connection.fetch(
        "SELECT id, event_types, model, min_severity, workspace FROM subscriptions "
        "WHERE $1 = ANY (event_types)",
        topic,
    )
    return {
        row["id"]: AlertFilter.of(
            row["event_types"], row["model"], Severity(row["min_severity"]), row["workspace"]
        )
        for row in rows
    }


async def enqueue_deliveries(
    connection: Connection, subscription_ids: list[str], event_id: str, event_type: str, body: bytes
) -> list[str]:
    """Queue the event for each subscription that still exists and does not have it yet (an event that
    arrives again is not queued again); the ids of the new deliveries."""
    rows = await connection.fetch(
        """
        INSERT INTO deliveries (subscription_id, event_id, event_type, body)
        SELECT id, $2, $3, $4 FROM subscriptions WHERE id = ANY ($1::text[])
        ON CONFLICT (subscription_id, event_id) DO NOTHING
        RETURNING id
        """,
        subscription_ids,
        event_id,
        event_type,
        body,
    )
    return [row["id"] for row in rows]


async def claim_due_deliveries(
    connection: Connection, limit: int, claim_seconds: float, max_attempts: int
) -> list[ClaimedDelivery]:
    """Take up to `limit` due deliveries for one attempt each: counted as attempted now, and not due
    again for `claim_seconds` (should this replica die mid-attempt, another retries after that). Rows
    another replica is claiming at the same moment are skipped, not waited for."""
    rows = await connection.fetch(
        """
        UPDATE deliveries AS d
        SET attempts = d.attempts + 1, next_attempt_at = now() + make_interval(secs => $2), updated_at = now()
        FROM subscriptions AS s
        WHERE s.id = d.subscription_id AND d.id IN (
            SELECT id FROM deliveries
            WHERE status = 'pending' AND next_attempt_at <= now() AND attempts < $3
            ORDER BY next_attempt_at
            LIMIT $1
            FOR UPDATE SKIP LOCKED
        )
        RETURNING d.id, d.subscription_id, d.event_id, d.event_type, d.body, d.attempts, s.url, s.secret
        """,
        limit,
        claim_seconds,
        max_attempts,
    )
    return [
        ClaimedDelivery(
            id=row["id"],
            subscription_id=row["subscription_id"],
            event_id=row["event_id"],
            event_type=row["event_type"],
            body=bytes(row["body"]),
            attempt=row["attempts"],
            url=row["url"],
            secret=row["secret"],
        )
        for row in rows
    ]


async def fail_abandoned_deliveries(connection: Connection, max_attempts: int) -> int:
    """Fail deliveries whose last attempt's replica stopped before recording how it went; how many."""
    result = await connection.execute(
        """
        UPDATE deliveries SET status = 'failed', updated_at = now(),
               last_error = 'the replica making the last attempt stopped before it was recorded'
        WHERE status = 'pending' AND attempts >= $1 AND next_attempt_at <= now()
        """,
        max_attempts,
    )
    return int(result.split()[-1])


async def record_attempt(connection: Connection, delivery: ClaimedDelivery, outcome: AttemptOutcome) -> bool:
    """Log the attempt and move the delivery on; False when the claim had expired and another replica had
    taken the delivery since (its attempt is the one that counts)."""
    async with connection.transaction():
        result = await connection.execute(
            """
            UPDATE deliveries SET status = $3, last_status_code = $4, last_error = $5, updated_at = now(),
                   next_attempt_at = now() + make_interval(secs => $6),
                   delivered_at = CASE WHEN $3 = 'delivered' THEN now() END
            WHERE id = $1 AND attempts = $2 AND status = 'pending'
            """,
            delivery.id,
            delivery.attempt,
            outcome.status,
            outcome.status_code,
            outcome.error,
            outcome.retry_in_seconds,
        )
        if result != "UPDATE 1":
            return False
        await connection.execute(
            "INSERT INTO delivery_attempts "
            "(delivery_id, attempt, started_at, duration_ms, status_code, error) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            delivery.id,
            delivery.attempt,
            outcome.started_at,
            outcome.duration_ms,
            outcome.status_code,
            outcome.error,
        )
        return True


async def list_deliveries(
    connection: Connection,
    subscription_id: str,
    status: DeliveryStatus | None,
    limit: int,
    offset: int,
) -> list[Delivery]:
    """The subscription's deliveries, newest first, each with its attempts."""
    rows = await connection.fetch(
        f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE subscription_id = $1 "
        "AND ($2::text IS NULL OR status = $2) ORDER BY created_at DESC, id LIMIT $3 OFFSET $4",
        subscription_id,
        status,
        limit,
        offset,
    )
    return await _with_attempts(connection, rows)


async def get_delivery(connection: Connection, delivery_id: str) -> Delivery | None:
    row = await connection.fetchrow(f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = $1", delivery_id)
    return (await _with_attempts(connection, [row]))[0] if row else None


async def _with_attempts(connection: Connection, rows: list[asyncpg.Record]) -> list[Delivery]:
    attempts: dict[str, list[DeliveryAttempt]] = {row["id"]: [] for row in rows}
    for attempt in await connection.fetch(
        "SELECT delivery_id, attempt, started_at, duration_ms, status_code, error FROM delivery_attempts "
        "WHERE delivery_id = ANY ($1::text[]) ORDER BY delivery_id, attempt",
        list(attempts),
    ):
        fields = dict(attempt)
        attempts[fields.pop("delivery_id")].append(DeliveryAttempt(**fields))
    return [Delivery(**dict(row), attempt_log=attempts[row["id"]]) for row in rows]


async def delete_finished_deliveries(connection: Connection, older_than_seconds: float) -> int:
    """Forget delivered and failed deliveries last touched longer ago than that; how many."""
    result = await connection.execute(
        "DELETE FROM deliveries WHERE status <> 'pending' AND updated_at < now() - make_interval(secs => $1)",
        older_than_seconds,
    )
    return int(result.split()[-1])
