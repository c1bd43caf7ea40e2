"""The bus's librdkafka producer reports what Kafka did not take, without a broker to talk to.

Delivery to a real broker is covered by tests/integration/test_kafka_bus.py and the services' tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from shared.bus.producer import MAX_MESSAGE_BYTES, KafkaProducer, PublishFailed
from tests.processes import free_port


@pytest.fixture
async def unreachable() -> AsyncIterator[KafkaProducer]:
    """A producer whose broker never answers, giving up on a message after 0.5 s."""
    producer = KafkaProducer(f"127.0.0.1:{free_port()}", client_id="tests", delivery_timeout_ms=500)
    producer.start()
    yield producer
    await producer.stop(timeout=0.1)


async def test_a_message_kafka_never_takes_fails_once_its_timeout_passes(unreachable: KafkaProducer) -> None:
    with pytest.raises(PublishFailed, match="timed out"):
        await asyncio.wait_for(unreachable.send("events", b"{}", b"key", [("content-type", b"x")]), 10)


async def test_a_message_larger_than_kafka_takes_is_refused_at_once(unreachable: KafkaProducer) -> None:
    with pytest.raises(PublishFailed, match="too large"):
        await unreachable.send("events", b"x" * (MAX_MESSAGE_BYTES + 1), None, [])


async def test_a_cancelled_send_leaves_the_producer_working(unreachable: KafkaProducer) -> None:
    """The delivery report of a message whose sender gave up must not break the next sends."""
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(unreachable.send("events", b"first", None, []), 0.05)
    with pytest.raises(PublishFailed, match="timed out"):
        await asyncio.wait_for(unreachable.send("events", b"second", None, []), 10)


async def test_no_broker_means_the_cluster_does_not_answer(unreachable: KafkaProducer) -> None:
    assert not await unreachable.cluster_answers(timeout=0.5)
