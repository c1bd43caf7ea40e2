"""One webhook attempt without a database: the body signed with the subscription's secret, the headers,
what each answer means for the delivery, and the back-off between attempts."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from typing import cast

import asyncpg
import httpx
import pytest

from services.monitor.deliveries import DeliveryWorker, delivery_headers, retry_delay, signature
from services.monitor.settings import MonitorSettings
from services.monitor.subscription_repository import ClaimedDelivery
from services.monitor.webhook_targets import WebhookTargets

SECRET = "a-secret-of-sixteen-or-more"
BODY = b'{"specversion":"1.0","id":"e-1","type":"io.flywheel.drift.detected.v1","data":{}}'


def delivery(attempt: int = 1, url: str = "https://hooks.example.com/flywheel") -> ClaimedDelivery:
    return ClaimedDelivery(
        id="d-1",
        subscription_id="s-1",
        event_id="e-1",
        event_type="io.flywheel.drift.detected.v1",
        body=BODY,
        attempt=attempt,
        url=url,
        secret=SECRET,
    )


PUBLIC_ADDRESS = "93.184.215.14"


async def resolve(host: str, port: int) -> list[str]:
    """A stand-in for DNS: hooks.example.com is public, internal.example.com resolves to a private address
    too."""
    return {"hooks.example.com": [PUBLIC_ADDRESS], "internal.example.com": [PUBLIC_ADDRESS, "10.0.0.7"]}[host]


def worker(answer: httpx.MockTransport, **settings: object) -> DeliveryWorker:
    return DeliveryWorker(
        cast(asyncpg.Pool, None),  # one attempt needs no database
        MonitorSettings.model_validate(
            {"delivery_max_attempts": 3, "delivery_backoff_seconds": 2, **settings}
        ),
        httpx.AsyncClient(transport=answer, follow_redirects=False),
        targets=WebhookTargets(deny_internal=True, resolver=resolve),
    )


def test_the_signature_is_the_hex_hmac_sha256_of_the_body_keyed_by_the_secret() -> None:
    expected = hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    assert signature(BODY, SECRET) == f"sha256={expected}"
    assert signature(BODY, SECRET + "x") != signature(BODY, SECRET)
    assert signature(BODY + b" ", SECRET) != signature(BODY, SECRET)


def test_a_delivery_says_what_it_is_and_never_shows_its_secret() -> None:
    headers = delivery_headers(delivery(attempt=2))
    assert headers["content-type"] == "application/cloudevents+json"
    assert headers["X-Flywheel-Signature"] == signature(BODY, SECRET)
    assert headers["X-Flywheel-Delivery"] == "d-1"
    assert headers["X-Flywheel-Event"] == "io.flywheel.drift.detected.v1"
    assert headers["X-Flywheel-Attempt"] == "2"
    assert SECRET not in repr(delivery())


def test_retries_wait_twice_as_long_each_time_up_to_the_longest_wait() -> None:
    assert [retry_delay(attempt, 10, 300) for attempt in range(1, 8)] == [10, 20, 40, 80, 160, 300, 300]
    assert retry_delay(10_000, 0.5, 60) == 60  # no overflow however many attempts


async def test_a_2xx_answer_delivers_the_signed_body() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    outcome = await worker(httpx.MockTransport(answer)).send(delivery())
    assert (outcome.status, outcome.status_code, outcome.error) == ("delivered", 204, None)
    (request,) = seen
    assert request.method == "POST"
    assert request.content == BODY
    assert request.headers["x-flywheel-signature"] == signature(BODY, SECRET)
    # Sent to the address that was checked, under the subscriber's host name.
    assert request.url == f"https://{PUBLIC_ADDRESS}/flywheel"
    assert request.headers["host"] == "hooks.example.com"
    assert request.extensions["sni_hostname"] == "hooks.example.com"


@pytest.mark.parametrize(
    ("response", "error"),
    [
        (httpx.Response(500, text="database down"), "answered 500 Internal Server Error: database down"),
        (httpx.Response(302, headers={"location": "http://10.0.0.1/"}), "answered 302 Found"),  # not followed
        (httpx.Response(410, text="x" * 10_000), "answered 410 Gone: " + "x" * 300),
    ],
)
async def test_any_other_answer_is_retried_after_the_back_off(response: httpx.Response, error: str) -> None:
    outcome = await worker(httpx.MockTransport(lambda request: response)).send(delivery(attempt=2))
    assert (outcome.status, outcome.status_code, outcome.error) == ("pending", response.status_code, error)
    assert outcome.retry_in_seconds == 4  # 2 s, doubled after the second attempt


async def test_a_connection_error_is_retried() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    outcome = await worker(httpx.MockTransport(refuse)).send(delivery())
    assert (outcome.status, outcome.status_code) == ("pending", None)
    assert outcome.error == "ConnectError: connection refused"


async def test_the_last_attempt_fails_the_delivery() -> None:
    outcome = await worker(httpx.MockTransport(lambda request: httpx.Response(503))).send(delivery(attempt=3))
    assert (outcome.status, outcome.status_code) == ("failed", 503)


async def test_a_url_the_monitor_may_not_send_to_fails_at_once_without_a_request() -> None:
    def unreachable(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request may be made")

    outcome = await worker(httpx.MockTransport(unreachable)).send(delivery(url="file:///etc/passwd"))
    assert outcome.status == "failed"
    assert str(outcome.error).startswith("not sent: the URL's scheme must be http")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://internal.example.com/hook", "internal.example.com (10.0.0.7) is a private address"),
        ("http://169.254.169.254/latest/meta-data", "169.254.169.254 is a link-local address"),
        ("http://127.0.0.1:8081/models", "127.0.0.1 is a loopback address"),
    ],
)
async def test_a_host_that_is_or_resolves_to_an_internal_address_fails_at_once_without_a_request(
    url: str, reason: str
) -> None:
    def unreachable(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request may be made")

    outcome = await worker(httpx.MockTransport(unreachable)).send(delivery(url=url))
    assert outcome.status == "failed"
    assert reason in str(outcome.error)
    assert "FLYWHEEL_MONITOR_WEBHOOK_ALLOWED_TARGETS" in str(outcome.error)


async def test_a_host_that_does_not_resolve_is_retried() -> None:
    async def nowhere(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    sender = worker(httpx.MockTransport(lambda request: httpx.Response(204)))
    sender.targets = WebhookTargets(deny_internal=True, resolver=nowhere)
    outcome = await sender.send(delivery())
    assert outcome.status == "pending"
    assert outcome.error == "cannot resolve the URL's host: Name or service not known"


async def test_a_slow_name_resolution_counts_within_the_timeout() -> None:
    async def slow(host: str, port: int) -> list[str]:
        await asyncio.sleep(5)
        return [PUBLIC_ADDRESS]

    sender = worker(httpx.MockTransport(lambda request: httpx.Response(204)), delivery_timeout_seconds=0.05)
    sender.targets = WebhookTargets(deny_internal=True, resolver=slow)
    outcome = await sender.send(delivery())
    assert (outcome.status, outcome.error) == ("pending", "no answer within 0.05s")
