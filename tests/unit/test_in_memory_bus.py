"""The in-memory bus keeps the Kafka bus's contract: at-least-once, per-group offsets, dead letters."""

from __future__ import annotations

from shared.bus import InMemoryBus
from shared.events import CloudEvent, DeadLetter, GroundTruth
from tests.waiting import eventually


def ground_truth(request_id: str) -> CloudEvent:
    return CloudEvent.wrap(GroundTruth(request_id=request_id, label=0), source="/tests")


def request_ids(events: list[CloudEvent]) -> list[str]:
    return [event.payload_as(GroundTruth).request_id for event in events]


async def test_each_group_gets_every_event_in_order() -> None:
    bus = InMemoryBus()
    first: list[CloudEvent] = []
    second: list[CloudEvent] = []

    async def to_first(event: CloudEvent) -> None:
        first.append(event)

    async def to_second(event: CloudEvent) -> None:
        second.append(event)

    await bus.subscribe("t", "group-a", to_first)
    await bus.subscribe("t", "group-b", to_second)
    for number in range(5):
        await bus.publish("t", ground_truth(f"r{number}"))
    await eventually(lambda: len(first) == 5 and len(second) == 5, what="both groups consumed")
    assert request_ids(first) == request_ids(second) == [f"r{n}" for n in range(5)]
    await bus.stop()


async def test_members_of_one_group_share_the_events_once_each() -> None:
    bus = InMemoryBus()
    seen: list[str] = []

    async def record(event: CloudEvent) -> None:
        seen.append(event.payload_as(GroundTruth).request_id)

    await bus.subscribe("t", "group", record)
    await bus.subscribe("t", "group", record)
    for number in range(10):
        await bus.publish("t", ground_truth(f"r{number}"))
    await eventually(lambda: len(seen) == 10, what="ten events consumed")
    assert seen == [f"r{n}" for n in range(10)]
    await bus.stop()


async def test_a_new_subscription_resumes_after_the_groups_committed_offset() -> None:
    bus = InMemoryBus()
    seen: list[CloudEvent] = []

    async def record(event: CloudEvent) -> None:
        seen.append(event)

    subscription = await bus.subscribe("t", "group", record)
    await bus.publish("t", ground_truth("before"))
    await eventually(lambda: len(seen) == 1, what="first event consumed")
    await subscription.close()
    await bus.publish("t", ground_truth("after"))
    await bus.subscribe("t", "group", record)
    await eventually(lambda: len(seen) == 2, what="second event consumed")
    assert request_ids(seen) == ["before", "after"]
    await bus.stop()


async def test_failing_handler_is_retried_then_dead_lettered_and_the_next_event_flows() -> None:
    bus = InMemoryBus(max_attempts=3, retry_backoff_seconds=0.001)
    attempts: list[str] = []

    async def flaky(event: CloudEvent) -> None:
        request_id = event.payload_as(GroundTruth).request_id
        attempts.append(request_id)
        if request_id == "poison":
            raise RuntimeError("cannot")

    await bus.subscribe("t", "group", flaky)
    await bus.publish_raw("t", b"garbage")
    await bus.publish("t", ground_truth("poison"))
    await bus.publish("t", ground_truth("fine"))
    await eventually(lambda: "fine" in attempts, what="the event after the poison handled")
    assert attempts == ["poison", "poison", "poison", "fine"]
    letters = [CloudEvent.from_json(record.value).payload_as(DeadLetter) for record in bus.records("t.dlq")]
    assert [letter.attempts for letter in letters] == [0, 3]
    assert letters[0].raw_value() == b"garbage"
    assert CloudEvent.from_json(letters[1].raw_value()).payload_as(GroundTruth).request_id == "poison"
    assert letters[1].error == "RuntimeError: cannot"
    await bus.stop()


async def test_a_handler_that_recovers_within_its_retries_is_not_dead_lettered() -> None:
    bus = InMemoryBus(max_attempts=5, retry_backoff_seconds=0.001)
    calls: list[int] = []

    async def recovers(event: CloudEvent) -> None:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("database restarting")

    await bus.subscribe("t", "group", recovers)
    await bus.publish("t", ground_truth("r"))
    await eventually(lambda: len(calls) == 3, what="third attempt")
    assert bus.records("t.dlq") == []
    await bus.stop()


async def test_a_new_group_starting_at_latest_sees_only_what_comes_after() -> None:
    bus = InMemoryBus()
    seen: list[CloudEvent] = []

    async def record(event: CloudEvent) -> None:
        seen.append(event)

    await bus.publish("t", ground_truth("old"))
    await bus.subscribe("t", "replica-1", record, new_group_starts_at="latest")
    await bus.publish("t", ground_truth("new"))
    await eventually(lambda: len(seen) == 1, what="the new event consumed")
    assert request_ids(seen) == ["new"]
    await bus.stop()


async def test_retention_keeps_the_latest_records_and_a_late_group_skips_ahead() -> None:
    bus = InMemoryBus(retained_records_per_topic=10)
    for number in range(100):
        await bus.publish("t", ground_truth(f"r{number}"))
    kept = bus.records("t")
    assert 10 <= len(kept) <= 11  # trimmed in chunks of a tenth
    assert kept[-1].offset == 99  # offsets stay those of the whole log
    seen: list[CloudEvent] = []

    async def collect(event: CloudEvent) -> None:
        seen.append(event)

    await bus.subscribe("t", "late", collect)
    await eventually(lambda: len(seen) == len(kept), what="the late group consumed what is kept")
    await bus.publish("t", ground_truth("r100"))
    await eventually(lambda: len(seen) == len(kept) + 1, what="the late group consumed the next record")
    assert request_ids(seen)[-2:] == ["r99", "r100"]
    await bus.stop()
