"""The scoring stream's confluent-kafka consumer: messages grouped into records by partition (errors and
revoked partitions left out), and its calls kept in order in its own thread, so that a seek made while a
consume is under way follows it, and a `getmany` cancelled mid-consume gives its records back. librdkafka
is faked here (the real thing: tests/integration/test_batch_stream.py)."""

from __future__ import annotations

import asyncio
import threading

import pytest
from aiokafka import TopicPartition
from confluent_kafka import KafkaError, Message
from confluent_kafka import TopicPartition as ConfluentPartition

from services.batch.consumer import ConsumerFailed, PartitionRecords, ThreadedConsumer, by_partition

TOPIC = "scoring-requests"


def records(*offsets: int) -> PartitionRecords:
    return PartitionRecords(list(offsets), [b"k%d" % offset for offset in offsets], [b"v"] * len(offsets))


def message(partition: int, offset: int, error: KafkaError | None = None) -> Message:
    return Message(
        topic=TOPIC, partition=partition, offset=offset, key=b"k%d" % offset, value=b"v", error=error
    )


def test_messages_become_records_by_partition_in_order() -> None:
    messages = [message(0, 5), message(0, 6), message(1, 3), message(0, 7), message(1, 4)]
    assert by_partition(messages) == {
        TopicPartition(TOPIC, 0): records(5, 6, 7),
        TopicPartition(TOPIC, 1): records(3, 4),
    }
    assert list(by_partition(messages)) == [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)]


def test_errors_librdkafka_recovers_from_are_left_out_and_a_fatal_one_raises() -> None:
    transient = message(0, 1, KafkaError(KafkaError._TRANSPORT, "broker down"))
    assert by_partition([message(0, 0), transient, message(0, 2)]) == {
        TopicPartition(TOPIC, 0): records(0, 2)
    }
    fatal = message(0, 1, KafkaError(KafkaError._FENCED, "fenced", fatal=True))
    with pytest.raises(ConsumerFailed):
        by_partition([message(0, 0), fatal])


def test_messages_of_partitions_revoked_during_the_call_are_left_out() -> None:
    messages = [message(0, 5), message(1, 3), message(0, 6), message(1, 4)]
    assert by_partition(messages, assigned={TopicPartition(TOPIC, 1)}) == {
        TopicPartition(TOPIC, 1): records(3, 4)
    }


class FakeConfluentConsumer:
    """Hands out one partition's messages; each consume call waits until `release` is set."""

    def __init__(self) -> None:
        self.position = 0
        self.calls: list[str] = []
        self.release = threading.Event()
        self.consuming = threading.Event()

    def consume(self, num_messages: int, timeout: float) -> list[Message]:
        self.consuming.set()
        self.release.wait(timeout=5)
        batch = [message(0, offset) for offset in range(self.position, self.position + num_messages)]
        self.position += num_messages
        self.calls.append(f"consume {batch[0].offset()}-{batch[-1].offset()}")
        return batch

    def seek(self, partition: ConfluentPartition) -> None:
        self.position = partition.offset
        self.calls.append(f"seek {partition.offset}")


async def started(fake: FakeConfluentConsumer) -> ThreadedConsumer:
    async def revoked() -> None:
        pass

    consumer = ThreadedConsumer({}, [TOPIC], revoked)
    consumer._loop = asyncio.get_running_loop()
    consumer._consumer = fake  # type: ignore[assignment]
    return consumer


async def test_a_getmany_cancelled_mid_consume_gives_its_records_back() -> None:
    fake = FakeConfluentConsumer()
    consumer = await started(fake)
    getting = asyncio.create_task(consumer.getmany(timeout_ms=500, max_records=4))
    await asyncio.to_thread(fake.consuming.wait)
    getting.cancel()
    fake.release.set()  # the consume call ends after its caller gave up on it
    with pytest.raises(asyncio.CancelledError):
        await getting
    again = await consumer.getmany(timeout_ms=500, max_records=4)
    assert again[TopicPartition(TOPIC, 0)].offsets == [0, 1, 2, 3]
    assert fake.calls == ["consume 0-3", "seek 0", "consume 0-3"]
    consumer._thread.shutdown()


async def test_a_seek_made_while_a_consume_is_under_way_follows_it() -> None:
    fake = FakeConfluentConsumer()
    consumer = await started(fake)
    getting = asyncio.create_task(consumer.getmany(timeout_ms=500, max_records=4))
    await asyncio.to_thread(fake.consuming.wait)
    consumer.seek(TopicPartition(TOPIC, 0), 2)
    fake.release.set()
    first = await getting
    second = await consumer.getmany(timeout_ms=500, max_records=2)
    assert first[TopicPartition(TOPIC, 0)].offsets == [0, 1, 2, 3]
    assert second[TopicPartition(TOPIC, 0)].offsets == [2, 3]
    assert fake.calls == ["consume 0-3", "seek 2", "consume 2-3"]
    consumer._thread.shutdown()
