"""Webhook deliveries: queued events POSTed to their subscriptions, signed, retried with back-off, logged.

Each delivery is a row (see `subscription_repository`). A replica claims due rows (`FOR UPDATE SKIP
LOCKED`, so replicas share the work and never send one attempt twice), counting the attempt as it
claims; the claim lasts the request's timeout plus a margin, after which a replica that died mid-attempt
is taken to have failed it. An attempt POSTs the CloudEvent in structured mode
(`content-type: application/cloudevents+json`), the same bytes every time, with:

- `X-Flywheel-Signature: sha256=<hex HMAC-SHA256 of the body, keyed by the subscription's secret>`
- `X-Flywheel-Delivery: <delivery id>` (the same on every attempt), `X-Flywheel-Event: <event type>`,
  `X-Flywheel-Attempt: <n>`.

A 2xx answer delivers it. Anything else (another status, a connection error, no answer within
`delivery_timeout_seconds`) is retried after `delivery_backoff_seconds`, doubling each time up to
`delivery_max_backoff_seconds`, until `delivery_max_attempts` attempts have failed. Redirects are not
followed. Every attempt is logged with its status code or error.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from datetime import UTC, datetime

import asyncpg
import httpx
from prometheus_client import Counter

from services.monitor import subscription_repository as repository
from services.monitor.settings import MonitorSettings
from services.monitor.subscription_repository import AttemptOutcome, ClaimedDelivery
from services.monitor.webhook_targets import InvalidTargetUrl, WebhookTargets

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/cloudevents+json"
SIGNATURE_HEADER = "X-Flywheel-Signature"
DELIVERY_HEADER = "X-Flywheel-Delivery"
EVENT_HEADER = "X-Flywheel-Event"
ATTEMPT_HEADER = "X-Flywheel-Attempt"
USER_AGENT = "Flywheel-Webhooks/0.1"
CLAIM_MARGIN_SECONDS = 30.0  # beyond the request's timeout, for recording how it went
ERROR_EXCERPT_CHARACTERS = 300  # of a refusing webhook's answer, kept in the log
CLEANUP_SECONDS = 600.0  # how often finished deliveries past their retention are deleted

ATTEMPTS = Counter(
    "flywheel_monitor_webhook_attempts_total",
    "Webhook POSTs, by what became of the delivery",
    ["outcome"],  # delivered, retrying, failed
)


def signature(body: bytes, secret: str) -> str:
    """The `X-Flywheel-Signature` of `body`: `sha256=` and the hex HMAC-SHA256 keyed by `secret`.
    A receiver recomputes it over the raw body and compares in constant time."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def retry_delay(failed_attempts: int, first_seconds: float, max_seconds: float) -> float:
    """How long to wait after the `failed_attempts`-th failed attempt: first, twice that, four times...,
    never more than `max_seconds`."""
    return min(max_seconds, first_seconds * 2.0 ** min(failed_attempts - 1, 64))


def delivery_headers(delivery: ClaimedDelivery) -> dict[str, str]:
    return {
        "content-type": CONTENT_TYPE,
        "user-agent": USER_AGENT,
        SIGNATURE_HEADER: signature(delivery.body, delivery.secret),
        DELIVERY_HEADER: delivery.id,
        EVENT_HEADER: delivery.event_type,
        ATTEMPT_HEADER: str(delivery.attempt),
    }


class DeliveryWorker:
    """Sends this replica's share of due deliveries, at most `delivery_concurrency` at once."""

    def __init__(
        self,
        database: asyncpg.Pool,
        settings: MonitorSettings,
        http: httpx.AsyncClient | None = None,
        *,
        targets: WebhookTargets | None = None,
    ) -> None:
        self.database = database
        self.settings = settings
        self.targets = targets or WebhookTargets(
            deny_internal=settings.webhook_deny_internal_targets, allowed=settings.webhook_allowed_targets
        )
        self.http = http or httpx.AsyncClient(
            follow_redirects=False,
            timeout=settings.delivery_timeout_seconds,
            limits=httpx.Limits(max_connections=settings.delivery_concurrency),
        )
        self.in_flight: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._last_abandoned_check = float("-inf")
        self._last_cleanup = float("-inf")

    def wake(self) -> None:
        """Deliveries were queued, or are due: look now rather than at the next poll."""
        self._wake.set()

    async def start(self) -> None:
        self._dispatcher = asyncio.create_task(self._dispatch_forever(), name="webhook-deliveries")

    async def stop(self) -> None:
        """Stop sending. Attempts cut short were counted; their deliveries are retried once their claim
        expires, by whichever replica runs then."""
        tasks = [*([self._dispatcher] if self._dispatcher else []), *self.in_flight]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.http.aclose()

    async def _dispatch_forever(self) -> None:
        while True:
            self._wake.clear()
            free = self.settings.delivery_concurrency - len(self.in_flight)
            claimed: list[ClaimedDelivery] = []
            try:
                await self._housekeeping()
                if free > 0:
                    async with self.database.acquire() as connection:
                        claimed = await repository.claim_due_deliveries(
                            connection,
                            free,
                            self.settings.delivery_timeout_seconds + CLAIM_MARGIN_SECONDS,
                            self.settings.delivery_max_attempts,
                        )
            except Exception:
                log.exception("claiming webhook deliveries failed; retrying")
            for delivery in claimed:
                task = asyncio.create_task(self._attempt(delivery), name=f"webhook:{delivery.id}")
                self.in_flight.add(task)
                task.add_done_callback(self._finished)
            if len(claimed) < free or free <= 0:  # nothing more due now, or every slot busy
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.delivery_poll_seconds):
                        await self._wake.wait()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.in_flight.discard(task)
        self.wake()  # a slot is free

    async def _housekeeping(self) -> None:
        """Now and then: fail deliveries whose last attempt was cut short, forget old ones."""
        now = time.monotonic()
        if now - self._last_abandoned_check < self.settings.delivery_poll_seconds:
            return
        self._last_abandoned_check = now
        async with self.database.acquire() as connection:
            abandoned = await repository.fail_abandoned_deliveries(
                connection, self.settings.delivery_max_attempts
            )
            if abandoned:
                log.warning(
                    "webhook deliveries failed: their last attempt was cut short", extra={"count": abandoned}
                )
            if now - self._last_cleanup >= CLEANUP_SECONDS:
                self._last_cleanup = now
                forgotten = await repository.delete_finished_deliveries(
                    connection, self.settings.delivery_retention_days * 86400
                )
                if forgotten:
                    log.info("old webhook deliveries deleted", extra={"count": forgotten})

    async def _attempt(self, delivery: ClaimedDelivery) -> None:
        outcome = await self.send(delivery)
        try:
            async with self.database.acquire() as connection:
                recorded = await repository.record_attempt(connection, delivery, outcome)
        except Exception:
            log.exception("recording a webhook attempt failed", extra={"delivery_id": delivery.id})
            return
        if not recorded:
            log.warning(
                "webhook attempt not recorded: its claim had lapsed and another replica took the delivery, "
                "or the subscription was deleted",
                extra={"delivery_id": delivery.id},
            )
            return
        ATTEMPTS.labels("retrying" if outcome.status == "pending" else outcome.status).inc()
        where = {
            "delivery_id": delivery.id,
            "subscription_id": delivery.subscription_id,
            "event_type": delivery.event_type,
            "attempt": delivery.attempt,
            "status_code": outcome.status_code,
        }
        if outcome.status == "pending":
            log.info(
                "webhook attempt failed, retrying", extra={**where, "retry_in_s": outcome.retry_in_seconds}
            )
            asyncio.get_running_loop().call_later(outcome.retry_in_seconds, self.wake)
        elif outcome.status == "failed":
            log.warning("webhook delivery failed", extra={**where, "error": outcome.error})

    async def send(self, delivery: ClaimedDelivery) -> AttemptOutcome:
        """Make one attempt and say what it means for the delivery; never raises for the webhook's faults."""
        started_at = datetime.now(UTC)
        started = time.perf_counter()
        status_code: int | None = None
        error: str | None = None
        permanent = False
        try:
            # The whole attempt, name resolution included, within the timeout.
            async with asyncio.timeout(self.settings.delivery_timeout_seconds):
                target = await self.targets.pin(delivery.url)
                async with self.http.stream(
                    "POST",
                    target.url,
                    content=delivery.body,
                    headers={**delivery_headers(delivery), "host": target.host_header},
                    extensions={"sni_hostname": target.server_name},
                ) as response:
                    status_code = response.status_code
                    if not response.is_success:
                        error = f"answered {status_code} {response.reason_phrase}{await _excerpt(response)}"
        except InvalidTargetUrl as refused:
            error, permanent = f"not sent: {refused}", True
        except TimeoutError:
            error = f"no answer within {self.settings.delivery_timeout_seconds:g}s"
        except httpx.HTTPError as failure:
            error = f"{type(failure).__name__}: {failure}" if str(failure) else type(failure).__name__
        except OSError as failure:  # the host name does not resolve (now)
            error = f"cannot resolve the URL's host: {failure}"
        duration_ms = (time.perf_counter() - started) * 1000
        if error is None:
            return AttemptOutcome("delivered", started_at, duration_ms, status_code, None)
        if permanent or delivery.attempt >= self.settings.delivery_max_attempts:
            return AttemptOutcome("failed", started_at, duration_ms, status_code, error)
        delay = retry_delay(
            delivery.attempt,
            self.settings.delivery_backoff_seconds,
            self.settings.delivery_max_backoff_seconds,
        )
        return AttemptOutcome("pending", started_at, duration_ms, status_code, error, delay)


async def _excerpt(response: httpx.Response) -> str:
    """The start of a refusing webhook's answer (read no further, however long it is)."""
    received = b""
    async for chunk in response.aiter_bytes():
        received += chunk
        if len(received) >= ERROR_EXCERPT_CHARACTERS:
            break
    text = received[:ERROR_EXCERPT_CHARACTERS].decode("utf-8", "replace").strip()
    return f": {' '.join(text.split())}" if text else ""
