"""The bus's producer (librdkafka behind an awaitable send): what its senders see when a record cannot be
delivered. Delivery itself is tested against a real broker in tests/integration/test_kafka_bus.py."""

from __future__ import annotations

import asyncio

import confluent_kafka
import pytest

from shared.bus.producer import MAX_REQUEST_BYTES, KafkaProducer

NO_BROKER = "127.0.0.1:1"  # nothing listens there: records wait in librdkafka's queue


async def test_a_record_larger_than_a_request_is_refused_at_once() -> None:
    producer = KafkaProducer(NO_BROKER, "test")
    try:
        with pytest.raises(confluent_kafka.KafkaException, match="MSG_SIZE_TOO_LARGE"):
            await producer.send("topic", b"x" * (MAX_REQUEST_BYTES + 1), None, [])
    finally:
        await producer.close(timeout_seconds=0.1)


async def test_closing_fails_the_sends_still_waiting_instead_of_leaving_them_hanging() -> None:
    producer = KafkaProducer(NO_BROKER, "test")
    waiting = asyncio.create_task(producer.send("topic", b"event", b"key", [("content-type", b"x")]))
    await asyncio.sleep(0.2)
    assert not waiting.done()

    await producer.close(timeout_seconds=0.2)

    with pytest.raises(confluent_kafka.KafkaException, match="PURGE"):
        await asyncio.wait_for(waiting, timeout=5)


async def test_a_broker_that_does_not_answer_is_not_ready() -> None:
    producer = KafkaProducer(NO_BROKER, "test")
    try:
        assert not await producer.ready(timeout_seconds=0.2)
    finally:
        await producer.close(timeout_seconds=0.1)
