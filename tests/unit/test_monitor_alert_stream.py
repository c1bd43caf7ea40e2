"""The alert stream's hub: each client gets what its filter wants, in order, through a bounded queue; a
client that falls behind is disconnected instead of growing memory; a reconnecting client gets what it
missed; the wire format is text/event-stream."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from services.monitor.alert_filters import AlertFilter, AlertNotice
from services.monitor.alert_stream import AlertHub, event_stream, server_sent_event
from shared.events import CloudEvent, DriftDetected, ModelPromoted, Severity

NOW = datetime(2024, 5, 1, tzinfo=UTC)
DRIFT = AlertFilter.of(["drift-detected"])


def drift(model: str = "credit") -> CloudEvent:
    alert = DriftDetected(
        model=model,
        version=1,
        window_start=NOW,
        window_end=NOW,
        window_rows=10,
        severity=Severity.WARNING,
        dataset_drift=True,
        features=[],
    )
    return CloudEvent.wrap(alert, source="/flywheel/monitor")


def queued_ids(hub: AlertHub, accepts: AlertFilter, last_event_id: str | None = None) -> list[str]:
    with hub.listen(accepts, last_event_id) as listener:
        ids = []
        while not listener.queue.empty():
            event = listener.queue.get_nowait()
            assert event is not None
            ids.append(event.id)
        return ids


async def test_each_listener_gets_the_events_its_filter_wants_in_order() -> None:
    hub = AlertHub(queue_size=10, replay_size=0)
    credit_events = [drift("credit"), drift("credit")]
    with hub.listen(AlertFilter.of(["drift-detected"], "credit")) as credit, hub.listen(DRIFT) as everything:
        hub.publish("drift-detected", credit_events[0])
        hub.publish("drift-detected", drift("churn"))
        hub.publish(
            "model-promoted", CloudEvent.wrap(ModelPromoted(name="credit", alias="a", version=1), source="/r")
        )
        hub.publish("drift-detected", credit_events[1])
        received = [await credit.next(), await credit.next()]
        assert [event.id for event in received if event] == [event.id for event in credit_events]
        assert credit.queue.empty()
        assert everything.queue.qsize() == 3
    assert hub.listeners == set()  # gone once the block ends


async def test_a_listener_that_falls_behind_is_disconnected_and_the_others_go_on() -> None:
    hub = AlertHub(queue_size=3, replay_size=0)
    with hub.listen(DRIFT) as slow, hub.listen(DRIFT) as fast:
        for _ in range(3):
            hub.publish("drift-detected", drift())
            assert await fast.next() is not None
        hub.publish("drift-detected", drift())  # the fourth: one too many for the slow one
        assert slow.disconnected
        assert slow.queue.qsize() == 1  # its backlog forgotten, only the end mark left
        assert await slow.next() is None
        assert slow not in hub.listeners
        assert await fast.next() is not None
        for _ in range(100):
            hub.publish("drift-detected", drift())
            await fast.next()
        assert not fast.disconnected


async def test_a_reconnecting_client_gets_the_events_after_its_last_one() -> None:
    hub = AlertHub(queue_size=2, replay_size=5)
    events = [drift() for _ in range(6)]
    for event in events:
        hub.publish("drift-detected", event)
    assert queued_ids(hub, DRIFT, events[2].id) == [events[4].id, events[5].id]  # the newest that fit
    assert queued_ids(hub, DRIFT, events[4].id) == [events[5].id]
    assert queued_ids(hub, DRIFT, events[0].id) == []  # too old to be kept
    assert queued_ids(hub, DRIFT, "unknown") == []
    assert queued_ids(hub, AlertFilter.of(["model-promoted"]), events[3].id) == []


def test_an_event_on_the_wire_has_its_id_its_topic_and_its_json() -> None:
    hub = AlertHub(queue_size=1, replay_size=1)
    event = drift()
    hub.publish("drift-detected", event)
    wire = server_sent_event(hub.recent[0])
    assert (
        wire == b"id: " + event.id.encode() + b"\nevent: drift-detected\ndata: " + event.to_json() + b"\n\n"
    )


async def test_the_stream_sends_events_keeps_alive_when_idle_and_ends_after_its_time() -> None:
    hub = AlertHub(queue_size=5, replay_size=0)
    stream = event_stream(hub, DRIFT, last_event_id=None, keepalive_seconds=0.05, max_seconds=30)
    assert await anext(stream) == b"retry: 1000\n: listening\n\n"
    event = drift()
    hub.publish("drift-detected", event)
    assert (await anext(stream)).startswith(b"id: " + event.id.encode())
    assert await anext(stream) == b": keep-alive\n\n"
    await stream.aclose()
    assert hub.listeners == set()

    short = event_stream(hub, DRIFT, last_event_id=None, keepalive_seconds=10, max_seconds=0.05)
    chunks = [chunk async for chunk in short]  # ends by itself
    assert chunks[0].startswith(b"retry:")


async def test_closing_the_hub_ends_every_stream() -> None:
    hub = AlertHub(queue_size=5, replay_size=0)
    stream = event_stream(hub, DRIFT, last_event_id=None, keepalive_seconds=10, max_seconds=30)
    await anext(stream)
    rest = asyncio.ensure_future(anext(stream, None))
    hub.close()
    assert await asyncio.wait_for(rest, 5) is None


def test_a_listener_of_a_workspace_gets_only_its_models_events_replayed_too() -> None:
    hub = AlertHub(queue_size=10, replay_size=10)
    first, risk, fraud = drift("credit"), drift("credit"), drift("fraud-model")
    hub.publish("drift-detected", first, AlertNotice("drift-detected", "credit", Severity.WARNING, "risk"))
    with hub.listen(AlertFilter.of(["drift-detected"], workspace="risk")) as listener:
        hub.publish("drift-detected", risk, AlertNotice("drift-detected", "credit", Severity.WARNING, "risk"))
        hub.publish(
            "drift-detected", fraud, AlertNotice("drift-detected", "fraud-model", Severity.WARNING, "fraud")
        )
        received = [listener.queue.get_nowait() for _ in range(listener.queue.qsize())]
        assert [event.id for event in received if event] == [risk.id]
    assert queued_ids(hub, AlertFilter.of(["drift-detected"], workspace="risk"), first.id) == [risk.id]
    assert queued_ids(hub, AlertFilter.of(["drift-detected"], workspace="fraud"), first.id) == [fraud.id]
    assert queued_ids(hub, DRIFT, first.id) == [risk.id, fraud.id]  # every workspace
