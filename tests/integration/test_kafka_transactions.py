"""The local Kafka supports what batch scoring's exactly-once path needs: idempotent, transactional
producers whose aborted writes stay invisible to read_committed consumers."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tests.conftest import Infrastructure
from tests.integration.conftest import KafkaBusFactory


async def test_committed_transactions_are_visible_and_aborted_ones_are_not(
    infrastructure: Infrastructure, kafka_bus_factory: KafkaBusFactory, unique_name: str
) -> None:
    await kafka_bus_factory(unique_name)  # creates the topic
    producer = AIOKafkaProducer(
        bootstrap_servers=infrastructure.kafka_bootstrap, transactional_id=f"{unique_name}-tx"
    )
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send_and_wait(unique_name, b"committed-1", key=b"k")
            await producer.send_and_wait(unique_name, b"committed-2", key=b"k")
        await producer.begin_transaction()
        await producer.send_and_wait(unique_name, b"aborted", key=b"k")
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send_and_wait(unique_name, b"committed-3", key=b"k")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        unique_name,
        bootstrap_servers=infrastructure.kafka_bootstrap,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        values: list[bytes] = []
        for _ in range(40):
            batches = await consumer.getmany(timeout_ms=250)
            values += [record.value for records in batches.values() for record in records]
            if len(values) >= 3:
                break
    finally:
        await consumer.stop()
    assert values == [b"committed-1", b"committed-2", b"committed-3"]
