"""The Kafka bus on a real broker: at-least-once delivery, resume from committed offsets, dead letters."""

from __future__ import annotations

import contextlib

from aiokafka.admin import AIOKafkaAdminClient

from shared.bus import KafkaBus, platform_topics
from shared.events import CloudEvent, DeadLetter, GroundTruth, Topic, dead_letter_topic
from tests.conftest import Infrastructure
from tests.integration.conftest import KafkaBusFactory
from tests.waiting import eventually


def ground_truth(request_id: str) -> CloudEvent:
    return CloudEvent.wrap(GroundTruth(request_id=request_id, label=1), source="/tests")


class Recorder:
    """A handler that remembers the events it was given."""

    def __init__(self) -> None:
        self.events: list[CloudEvent] = []

    async def __call__(self, event: CloudEvent) -> None:
        self.events.append(event)

    def request_ids(self) -> list[str]:
        return [event.payload_as(GroundTruth).request_id for event in self.events]


async def test_start_creates_platform_topics_with_configured_partitions(
    infrastructure: Infrastructure, kafka_bus_factory: KafkaBusFactory, unique_name: str
) -> None:
    await kafka_bus_factory(unique_name, partitions=2)
    admin = AIOKafkaAdminClient(bootstrap_servers=infrastructure.kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        described = await admin.describe_topics([unique_name])
    finally:
        await admin.close()
    assert set(platform_topics()) <= existing
    assert {Topic.RUN_COMPLETED.value, dead_letter_topic(Topic.RUN_COMPLETED)} <= existing
    assert len(described[0]["partitions"]) == 2


async def test_published_events_reach_a_subscriber_whole_and_in_key_order(
    kafka_bus_factory: KafkaBusFactory, unique_name: str
) -> None:
    bus = await kafka_bus_factory(unique_name)
    sent = [ground_truth(f"request-{number}") for number in range(20)]
    for event in sent:
        await bus.publish(unique_name, event, key="one-entity")
    received = Recorder()
    await bus.subscribe(unique_name, f"{unique_name}-group", received)
    await eventually(lambda: len(received.events) >= 20, what="20 events consumed")
    assert [event.id for event in received.events] == [event.id for event in sent]
    assert received.events[0] == sent[0]


async def test_restarted_consumer_resumes_after_the_last_committed_offset(
    kafka_bus_factory: KafkaBusFactory, unique_name: str
) -> None:
    bus = await kafka_bus_factory(unique_name)
    group = f"{unique_name}-group"
    for number in range(5):
        await bus.publish(unique_name, ground_truth(f"first-{number}"), key="k")
    first = Recorder()
    subscription = await bus.subscribe(unique_name, group, first)
    await eventually(lambda: len(first.events) == 5, what="first five events consumed")
    await subscription.close()

    for number in range(3):
        await bus.publish(unique_name, ground_truth(f"second-{number}"), key="k")
    second = Recorder()
    await bus.subscribe(unique_name, group, second)
    await eventually(lambda: len(second.events) >= 3, what="the three new events consumed")
    assert second.request_ids() == ["second-0", "second-1", "second-2"]


async def test_uncommitted_event_is_redelivered_after_a_consumer_restart(
    kafka_bus_factory: KafkaBusFactory, unique_name: str
) -> None:
    """A consumer that dies while handling an event has not committed it: the next one gets it again."""
    bus = await kafka_bus_factory(unique_name, max_attempts=1000, retry_backoff_seconds=0.05)
    group = f"{unique_name}-group"
    await bus.publish(unique_name, ground_truth("crash-during-this"), key="k")
    attempts: list[str] = []

    async def always_failing(event: CloudEvent) -> None:
        attempts.append(event.id)
        raise ConnectionError("downstream is down")

    subscription = await bus.subscribe(unique_name, group, always_failing)
    await eventually(lambda: len(attempts) >= 2, what="handler attempted twice")
    await subscription.close()  # the "crash": the handler never succeeded

    redelivered = Recorder()
    await bus.subscribe(unique_name, group, redelivered)
    await eventually(lambda: len(redelivered.events) == 1, what="event redelivered")
    assert redelivered.request_ids() == ["crash-during-this"]


async def test_poison_message_goes_to_dlq_and_the_next_message_is_processed(
    kafka_bus_factory: KafkaBusFactory, unique_name: str
) -> None:
    bus = await kafka_bus_factory(unique_name, dead_letter_topic(unique_name), retry_backoff_seconds=0.01)
    await bus.publish_raw(unique_name, b"{not json", key=b"entity-7")
    await bus.publish(unique_name, ground_truth("after-the-poison"), key="entity-7")

    received = Recorder()
    dead_letters = Recorder()
    await bus.subscribe(unique_name, f"{unique_name}-group", received)
    await bus.subscribe(dead_letter_topic(unique_name), f"{unique_name}-dlq-reader", dead_letters)

    await eventually(
        lambda: received.events != [] and dead_letters.events != [], what="event and dead letter"
    )
    assert received.request_ids() == ["after-the-poison"]
    letter = dead_letters.events[0].payload_as(DeadLetter)
    assert letter.source_topic == unique_name
    assert letter.raw_value() == b"{not json"
    assert letter.key == "entity-7"
    assert letter.offset == 0
    assert "not a CloudEvents 1.0 JSON envelope" in letter.error


async def test_handler_that_keeps_failing_is_dead_lettered_after_its_retries(
    kafka_bus_factory: KafkaBusFactory, unique_name: str
) -> None:
    bus = await kafka_bus_factory(
        unique_name, dead_letter_topic(unique_name), max_attempts=3, retry_backoff_seconds=0.01
    )
    attempts: list[str] = []

    async def fails_on_first_event(event: CloudEvent) -> None:
        attempts.append(event.payload_as(GroundTruth).request_id)
        if event.payload_as(GroundTruth).request_id == "bad":
            raise RuntimeError("cannot handle this one")

    await bus.publish(unique_name, ground_truth("bad"), key="k")
    await bus.publish(unique_name, ground_truth("good"), key="k")
    dead_letters = Recorder()
    await bus.subscribe(unique_name, f"{unique_name}-group", fails_on_first_event)
    await bus.subscribe(dead_letter_topic(unique_name), f"{unique_name}-dlq-reader", dead_letters)

    await eventually(
        lambda: "good" in attempts and dead_letters.events != [], what="dead letter and next event"
    )
    assert attempts == ["bad", "bad", "bad", "good"]
    letter = dead_letters.events[0].payload_as(DeadLetter)
    assert letter.attempts == 3
    assert letter.error == "RuntimeError: cannot handle this one"
    assert CloudEvent.from_json(letter.raw_value()).payload_as(GroundTruth).request_id == "bad"


async def test_two_buses_in_one_group_share_the_partitions(
    kafka_bus_factory: KafkaBusFactory, unique_name: str
) -> None:
    """Scale-out: members of one consumer group each get a part, and together every event once."""
    first_bus: KafkaBus = await kafka_bus_factory(unique_name, partitions=2)
    second_bus: KafkaBus = await kafka_bus_factory(unique_name, partitions=2)
    group = f"{unique_name}-group"
    first, second = Recorder(), Recorder()
    await first_bus.subscribe(unique_name, group, first)
    await second_bus.subscribe(unique_name, group, second)
    await eventually(
        lambda: all(len(bus_subscription_assignment(bus)) == 1 for bus in (first_bus, second_bus)),
        what="one partition assigned to each member",
    )
    for number in range(40):
        await first_bus.publish(unique_name, ground_truth(f"r{number}"), key=f"entity-{number}")
    await eventually(lambda: len(first.events) + len(second.events) >= 40, what="40 events consumed")
    assert sorted(first.request_ids() + second.request_ids()) == sorted(f"r{n}" for n in range(40))
    assert first.events, "the first member got no partition's events"
    assert second.events, "the second member got no partition's events"


def bus_subscription_assignment(bus: KafkaBus) -> set[object]:
    return {partition for subscription in bus._subscriptions for partition in subscription.assignment()}


async def test_a_namespace_keeps_topics_and_groups_apart_on_one_cluster(
    infrastructure: Infrastructure, kafka_bus_factory: KafkaBusFactory, unique_name: str
) -> None:
    staging = await kafka_bus_factory(namespace=f"{unique_name}-staging")
    production = await kafka_bus_factory(namespace=f"{unique_name}-production")
    staging_events, production_events = Recorder(), Recorder()
    await staging.subscribe(Topic.GROUND_TRUTH, "monitor", staging_events)
    await production.subscribe(Topic.GROUND_TRUTH, "monitor", production_events)
    await staging.publish(Topic.GROUND_TRUTH, ground_truth("staging-only"))
    await eventually(lambda: staging_events.events != [], what="staging event consumed")
    assert staging_events.request_ids() == ["staging-only"]
    assert production_events.events == []
    admin = AIOKafkaAdminClient(bootstrap_servers=infrastructure.kafka_bootstrap)
    await admin.start()
    try:
        topics = set(await admin.list_topics())
    finally:
        await admin.close()
    assert f"{unique_name}-staging.ground-truth" in topics
    assert f"{unique_name}-staging.ground-truth.dlq" in topics


async def test_a_new_group_starting_at_latest_sees_only_what_comes_after(
    kafka_bus_factory: KafkaBusFactory, unique_name: str
) -> None:
    bus = await kafka_bus_factory(unique_name, partitions=1)
    await bus.publish(unique_name, ground_truth("before"), key="k")
    later = Recorder()
    await bus.subscribe(unique_name, f"{unique_name}-replica", later, new_group_starts_at="latest")
    for attempt in range(100):  # the group's start offset is fixed on its first fetch; keep publishing
        await bus.publish(unique_name, ground_truth(f"after-{attempt}"), key="k")
        with contextlib.suppress(AssertionError):
            await eventually(lambda: later.events != [], within=0.3, what="a new event consumed")
            break
    assert later.events, "nothing published after subscribing was consumed"
    assert "before" not in later.request_ids()
