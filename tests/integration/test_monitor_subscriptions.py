"""Alert subscribers on real Kafka and PostgreSQL: the monitor served over real HTTP, webhooks on a real
local receiver. A published alert reaches its webhook once, correctly signed; a failing webhook is retried
and its log shows every attempt; filters hold events back; model-promoted reaches the subscriptions that
follow it; the alert stream and `flywheel alerts` show alerts as they happen."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx
import pytest
import uvicorn

from flywheel.cli import main
from services.monitor.app import create_app
from services.monitor.settings import MonitorSettings
from shared.bus import KafkaBus
from shared.events import (
    CloudEvent,
    DriftDetected,
    FeatureDrift,
    ModelPromoted,
    ModelRegistered,
    ModelSignature,
    Severity,
    TensorSpec,
    Topic,
)
from tests.conftest import Infrastructure
from tests.integration.conftest import delete_topics, fresh_namespace
from tests.processes import free_port
from tests.uvicorn_in_loop import serving_in_this_loop
from tests.waiting import eventually, eventually_true

SECRET = "a-test-secret-of-some-length"
MAX_ATTEMPTS = 4
ORDERED = "one-partition"  # a key for events that must be consumed in the order they were published


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Receiver:
    """A webhook receiver: records every request, and answers 500 to the first `failures[path]` ones on a
    path (503 forever when that is -1), then 200."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)

    def at(self, path: str) -> list[Received]:
        return [request for request in self.received if request.path == path]

    async def __call__(
        self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]
    ) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["path"]
        headers = {name.decode().lower(): value.decode() for name, value in scope["headers"]}
        self.received.append(Received(path, headers, body))
        failing = self.failures.get(path, 0)
        status = 503 if failing < 0 else 500 if failing > 0 else 200
        if failing > 0:
            self.failures[path] = failing - 1
        await send(
            {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]}
        )
        await send({"type": "http.response.body", "body": b"not now" if status != 200 else b"ok"})


@contextlib.asynccontextmanager
async def serving(app: Any, *, lifespan: Literal["on", "off"]) -> AsyncIterator[str]:
    """`app` served by uvicorn on a free local port for the block; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, lifespan=lifespan, log_config=None, log_level="warning"
    )
    async with serving_in_this_loop(config):
        yield f"http://127.0.0.1:{port}"


@dataclass
class Monitor:
    url: str
    http: httpx.AsyncClient
    bus: KafkaBus
    receiver: Receiver

    async def subscribe(self, path: str, **fields: Any) -> dict[str, Any]:
        body = {"url": f"{self.receiver.url}{path}", "secret": SECRET, **fields}
        response = await self.http.post("/subscriptions", json=body)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    async def deliveries(self, subscription_id: str) -> list[dict[str, Any]]:
        response = await self.http.get(f"/subscriptions/{subscription_id}/deliveries")
        assert response.status_code == 200, response.text
        found: list[dict[str, Any]] = response.json()["deliveries"]
        return found

    async def publish(self, topic: str, event: CloudEvent, key: str = ORDERED) -> None:
        await self.bus.publish(topic, event, key=key)


@pytest.fixture(scope="module")
async def monitor(infrastructure: Infrastructure, module_database_url: str) -> AsyncIterator[Monitor]:
    """The monitor alone in its database and Kafka namespace, with quick retries, and a receiver."""
    namespace = fresh_namespace()
    settings = infrastructure.settings(
        database_url=module_database_url, kafka_namespace=namespace, s3_bucket="flywheel-tests"
    )
    monitor_settings = MonitorSettings(
        delivery_backoff_seconds=0.2,
        delivery_max_attempts=MAX_ATTEMPTS,
        delivery_timeout_seconds=5,
        delivery_poll_seconds=1,
        alert_stream_keepalive_seconds=1,
        alert_stream_max_seconds=60,
        webhook_allowed_targets=["127.0.0.1"],  # the receiver listens on loopback, refused by default
    )
    receiver = Receiver()
    bus = KafkaBus(infrastructure.kafka_bootstrap, client_id="tests", namespace=namespace)
    await bus.start()
    try:
        async with (
            serving(receiver, lifespan="off") as receiver_url,
            serving(create_app(settings, monitor_settings), lifespan="on") as monitor_url,
            httpx.AsyncClient(base_url=monitor_url, timeout=30) as http,
        ):
            receiver.url = receiver_url
            yield Monitor(monitor_url, http, bus, receiver)
    finally:
        await bus.stop()
        await delete_topics(infrastructure.kafka_bootstrap, f"{namespace}.")


def unique_model() -> str:
    return f"model-{uuid.uuid4().hex[:8]}"


def drift_alert(model: str, severity: Severity = Severity.WARNING) -> CloudEvent:
    end = datetime.now(UTC)
    return CloudEvent.wrap(
        DriftDetected(
            model=model,
            version=3,
            window_start=end - timedelta(minutes=5),
            window_end=end,
            window_rows=1000,
            severity=severity,
            dataset_drift=True,
            features=[
                FeatureDrift(
                    feature="age", method="wasserstein", statistic=0.31, threshold=0.1, drifted=True
                ),
                FeatureDrift(
                    feature="income", method="wasserstein", statistic=0.02, threshold=0.1, drifted=False
                ),
            ],
        ),
        source="/flywheel/monitor",
    )


def promotion(model: str) -> CloudEvent:
    return CloudEvent.wrap(
        ModelPromoted(name=model, alias="production", version=4, previous_version=3),
        source="/flywheel/registry",
    )


def registration(model: str) -> CloudEvent:
    spec = TensorSpec(name="X", datatype="FP32", shape=[-1, 4])
    return CloudEvent.wrap(
        ModelRegistered(
            name=model,
            version=4,
            artifact_uri="s3://flywheel/models/m/4/model.onnx",
            artifact_sha256="0" * 64,
            signature=ModelSignature(inputs=[spec], outputs=[spec]),
        ),
        source="/flywheel/registry",
    )


def expected_signature(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


async def test_a_webhook_receives_a_drift_alert_once_signed_with_its_secret(monitor: Monitor) -> None:
    model = unique_model()
    subscription = await monitor.subscribe("/signed", model=model)
    alert = drift_alert(model)
    await monitor.publish(Topic.DRIFT_DETECTED, alert)
    await eventually(lambda: len(monitor.receiver.at("/signed")) == 1, within=60, what="the alert delivered")

    delivered = monitor.receiver.at("/signed")[0]
    assert hmac.compare_digest(delivered.headers["x-flywheel-signature"], expected_signature(delivered.body))
    assert delivered.headers["content-type"] == "application/cloudevents+json"
    assert delivered.headers["x-flywheel-event"] == DriftDetected.event_type
    body = delivered.event()
    assert (body["id"], body["type"], body["specversion"]) == (alert.id, DriftDetected.event_type, "1.0")
    assert DriftDetected.model_validate(body["data"]) == alert.payload()

    # The same event again (Kafka delivers at least once), then another: the first is not sent twice.
    await monitor.publish(Topic.DRIFT_DETECTED, alert)
    later = drift_alert(model)
    await monitor.publish(Topic.DRIFT_DETECTED, later)
    await eventually(lambda: len(monitor.receiver.at("/signed")) == 2, within=60, what="the second alert")
    assert [request.event()["id"] for request in monitor.receiver.at("/signed")] == [alert.id, later.id]

    log = await monitor.deliveries(subscription["id"])
    assert [(d["event_id"], d["status"], d["attempts"]) for d in log] == [
        (later.id, "delivered", 1),
        (alert.id, "delivered", 1),
    ]
    assert log[1]["id"] == delivered.headers["x-flywheel-delivery"]
    assert log[1]["attempt_log"][0]["status_code"] == 200


async def test_a_failing_webhook_is_retried_with_back_off_and_every_attempt_is_logged(
    monitor: Monitor,
) -> None:
    model = unique_model()
    monitor.receiver.failures["/flaky"] = 2
    subscription = await monitor.subscribe("/flaky", model=model)
    alert = drift_alert(model)
    await monitor.publish(Topic.DRIFT_DETECTED, alert)

    async def delivered() -> bool:
        log = await monitor.deliveries(subscription["id"])
        return bool(log) and log[0]["status"] == "delivered"

    await eventually_true(delivered, within=60, what="the delivery after two refusals")
    (delivery,) = await monitor.deliveries(subscription["id"])
    assert delivery["attempts"] == 3
    assert [attempt["status_code"] for attempt in delivery["attempt_log"]] == [500, 500, 200]
    assert "answered 500" in delivery["attempt_log"][0]["error"]
    requests = monitor.receiver.at("/flaky")
    assert [request.headers["x-flywheel-attempt"] for request in requests] == ["1", "2", "3"]
    assert {request.headers["x-flywheel-delivery"] for request in requests} == {delivery["id"]}
    assert {request.body for request in requests} == {requests[0].body}  # the same bytes, the same signature
    assert all(
        request.headers["x-flywheel-signature"] == expected_signature(request.body) for request in requests
    )


async def test_a_webhook_that_keeps_refusing_fails_after_the_last_attempt(monitor: Monitor) -> None:
    model = unique_model()
    monitor.receiver.failures["/down"] = -1
    subscription = await monitor.subscribe("/down", model=model)
    await monitor.publish(Topic.DRIFT_DETECTED, drift_alert(model))

    async def failed() -> bool:
        log = await monitor.deliveries(subscription["id"])
        return bool(log) and log[0]["status"] == "failed"

    await eventually_true(failed, within=60, what="the delivery failing")
    (delivery,) = await monitor.deliveries(subscription["id"])
    assert (delivery["attempts"], delivery["last_status_code"]) == (MAX_ATTEMPTS, 503)
    assert delivery["next_attempt_at"] is None
    assert len(delivery["attempt_log"]) == MAX_ATTEMPTS
    assert len(monitor.receiver.at("/down")) == MAX_ATTEMPTS


async def test_alerts_of_other_models_or_below_the_severity_are_not_delivered(monitor: Monitor) -> None:
    model = unique_model()
    subscription = await monitor.subscribe("/critical", model=model, min_severity="critical")
    # All on one partition, so the last (wanted) one is consumed after the others were judged.
    await monitor.publish(Topic.DRIFT_DETECTED, drift_alert(model, Severity.WARNING))
    await monitor.publish(Topic.DRIFT_DETECTED, drift_alert(unique_model(), Severity.CRITICAL))
    wanted = drift_alert(model, Severity.CRITICAL)
    await monitor.publish(Topic.DRIFT_DETECTED, wanted)

    await eventually(lambda: len(monitor.receiver.at("/critical")) >= 1, within=60, what="the critical alert")
    assert [request.event()["id"] for request in monitor.receiver.at("/critical")] == [wanted.id]
    assert [delivery["event_id"] for delivery in await monitor.deliveries(subscription["id"])] == [wanted.id]


async def test_model_events_reach_the_subscriptions_that_follow_them(monitor: Monitor) -> None:
    model = unique_model()
    ci = await monitor.subscribe("/ci", model=model, event_types=["model-registered", "model-promoted"])
    drift_only = await monitor.subscribe("/drift-only", model=model)
    registered, promoted = registration(model), promotion(model)
    await monitor.publish(Topic.MODEL_REGISTERED, registered)
    await monitor.publish(Topic.MODEL_PROMOTED, promoted)

    await eventually(lambda: len(monitor.receiver.at("/ci")) == 2, within=60, what="both model events")
    by_type = {request.headers["x-flywheel-event"]: request for request in monitor.receiver.at("/ci")}
    assert by_type[ModelPromoted.event_type].event()["data"] == promoted.data
    assert by_type[ModelRegistered.event_type].event()["id"] == registered.id
    assert all(r.headers["x-flywheel-signature"] == expected_signature(r.body) for r in by_type.values())
    # Each event was judged against every subscription at once, so the other one's verdict is in.
    assert await monitor.deliveries(drift_only["id"]) == []
    assert len(await monitor.deliveries(ci["id"])) == 2


async def test_a_ping_reaches_the_webhook_signed(monitor: Monitor) -> None:
    subscription = await monitor.subscribe("/ping", model=unique_model())
    response = await monitor.http.post(f"/subscriptions/{subscription['id']}/test")
    assert response.status_code == 202, response.text
    assert response.json()["event_type"] == "io.flywheel.subscription.ping.v1"
    await eventually(lambda: len(monitor.receiver.at("/ping")) == 1, within=60, what="the ping")
    ping = monitor.receiver.at("/ping")[0]
    assert ping.headers["x-flywheel-signature"] == expected_signature(ping.body)
    assert ping.event()["data"]["subscription_id"] == subscription["id"]


async def test_subscriptions_are_validated_listed_without_secrets_and_deleted(monitor: Monitor) -> None:
    refused = {
        "ftp://example.com/hook": "scheme must be http or https",
        "http://user:pw@example.com/hook": "user name or password",
        "https:///nohost": "names no host",
        "http://10.1.2.3/hook": "10.1.2.3 is a private address",
        "http://169.254.169.254/latest/meta-data/": "169.254.169.254 is a link-local address",
        "http://localhost:5432/": "localhost is a loopback name",
    }
    for url, reason in refused.items():
        response = await monitor.http.post("/subscriptions", json={"url": url})
        assert response.status_code == 422, url
        assert reason in response.text
    unknown_topic = await monitor.http.post(
        "/subscriptions", json={"url": "https://example.com/h", "event_types": ["run-completed"]}
    )
    assert unknown_topic.status_code == 422
    short_secret = await monitor.http.post(
        "/subscriptions", json={"url": "https://example.com/h", "secret": "x"}
    )
    assert short_secret.status_code == 422

    created = (await monitor.http.post("/subscriptions", json={"url": "https://example.com/h"})).json()
    assert len(created["secret"]) >= 32  # generated, and shown this once
    assert created["secret_hint"] == "…" + created["secret"][-4:]
    shown = (await monitor.http.get(f"/subscriptions/{created['id']}")).json()
    listed = (await monitor.http.get("/subscriptions", params={"page_size": 1000})).json()["subscriptions"]
    assert "secret" not in shown
    assert created["secret"] not in json.dumps(listed)
    assert shown == next(s for s in listed if s["id"] == created["id"])
    assert (await monitor.http.get("/subscriptions", params={"page_token": "nope"})).status_code == 400
    unknown_stream = await monitor.http.get(
        "/alerts/stream", params={"types": "drift-detected,run-completed"}
    )
    assert unknown_stream.status_code == 422
    assert "unknown topic(s) ['run-completed']" in unknown_stream.text

    assert (await monitor.http.delete(f"/subscriptions/{created['id']}")).status_code == 204
    for gone in (
        monitor.http.get(f"/subscriptions/{created['id']}"),
        monitor.http.delete(f"/subscriptions/{created['id']}"),
        monitor.http.get(f"/subscriptions/{created['id']}/deliveries"),
        monitor.http.post(f"/subscriptions/{created['id']}/test"),
    ):
        assert (await gone).status_code == 404


async def keep_publishing(
    monitor: Monitor, events: Callable[[], list[tuple[str, CloudEvent]]], until: Callable[[], bool]
) -> None:
    """Publish `events()` again and again until `until()`: the stream's consumer group starts at the end
    of the log once it has joined, which a test cannot see, so anything published before may be missed."""
    for _ in range(120):
        for topic, event in events():
            await monitor.publish(topic, event)
        with contextlib.suppress(AssertionError):
            await eventually(until, within=1, what="an event on the stream")
        if until():
            return
    raise AssertionError("nothing published reached the stream")


async def test_the_alert_stream_yields_alerts_of_its_model_as_they_are_published(monitor: Monitor) -> None:
    model = unique_model()
    received: list[tuple[str, dict[str, Any]]] = []

    async def listen() -> None:
        params = {"model": model, "types": "drift-detected,model-promoted"}
        async with monitor.http.stream("GET", "/alerts/stream", params=params) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            name = ""
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    name = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    received.append((name, json.loads(line.removeprefix("data: "))))

    listening = asyncio.create_task(listen())
    try:
        await keep_publishing(
            monitor,
            lambda: [
                (Topic.DRIFT_DETECTED, drift_alert(unique_model())),
                (Topic.DRIFT_DETECTED, drift_alert(model)),
                (Topic.MODEL_PROMOTED, promotion(model)),
            ],
            until=lambda: {"drift-detected", "model-promoted"} <= {name for name, _ in received},
        )
    finally:
        listening.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listening
    assert {event["data"].get("model") or event["data"].get("name") for _, event in received} == {model}
    assert {event["type"] for _, event in received} <= {DriftDetected.event_type, ModelPromoted.event_type}


async def test_the_cli_subscribes_lists_shows_deliveries_tails_and_unsubscribes(
    monitor: Monitor, capsys: pytest.CaptureFixture[str]
) -> None:
    model = unique_model()

    async def flywheel(*arguments: str) -> tuple[int, str]:
        status = await asyncio.to_thread(main, [*arguments, "--monitor-url", monitor.url])
        return status, capsys.readouterr().out

    status, created = await flywheel(
        "alerts", "subscribe", f"{monitor.receiver.url}/cli", "--secret", SECRET, "--model", model,
        "--severity", "warning", "--json",
    )  # fmt: skip
    assert status == 0
    subscription = json.loads(created)
    assert (subscription["model"], subscription["min_severity"]) == (model, "warning")

    tail = asyncio.create_task(flywheel("alerts", "tail", "--model", model, "--count", "1"))
    await keep_publishing(monitor, lambda: [(Topic.DRIFT_DETECTED, drift_alert(model))], until=tail.done)
    status, line = await tail
    assert status == 0
    assert (
        f"drift-detected     {model} v3  warning  dataset drift: 1 of 2 features (age wasserstein 0.31)"
        in line
    )

    await eventually(lambda: len(monitor.receiver.at("/cli")) >= 1, within=60, what="the webhook delivery")
    status, listed = await flywheel("alerts", "subscriptions")
    assert status == 0
    assert subscription["id"] in listed
    assert SECRET not in listed
    status, log = await flywheel("alerts", "deliveries", subscription["id"])
    assert status == 0
    assert "io.flywheel.drift.detected.v1" in log
    assert "delivered" in log
    status, _ = await flywheel("alerts", "unsubscribe", subscription["id"])
    assert status == 0
    status, _ = await flywheel("alerts", "deliveries", subscription["id"])
    assert status == 1
