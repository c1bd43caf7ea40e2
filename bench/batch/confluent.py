"""The raw loops of `loops.py` with confluent-kafka (librdkafka, in C) instead of aiokafka: whether the
Python client is what holds Kafka-fed scoring back. (The batch stream consumes with confluent-kafka.)"""

from __future__ import annotations

import importlib.metadata
import time
from typing import Any

import confluent_kafka

from bench.batch.loops import (
    PRODUCER_BATCH_BYTES,
    PRODUCER_LINGER_MS,
    LoopFigure,
    LoopSpec,
)
from bench.batch.topics import FETCH_MAX_BYTES, PARTITION_FETCH_MAX_BYTES

CONSUME_TIMEOUT_SECONDS = 0.5
TRANSACTION_TIMEOUT_SECONDS = 60.0


def confluent_kafka_version() -> str:
    """confluent-kafka's version and librdkafka's."""
    return f"{importlib.metadata.version('confluent-kafka')} (librdkafka {confluent_kafka.libversion()[0]})"


def confluent_loop(spec: LoopSpec) -> LoopFigure:
    """The loop in this thread (confluent-kafka's calls block; librdkafka's own threads do the I/O)."""
    producer_config: dict[str, Any] = {
        "bootstrap.servers": spec.bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": PRODUCER_LINGER_MS,
        "batch.size": PRODUCER_BATCH_BYTES,
        # Room for several batches in flight: produce() never has to wait for deliveries.
        "queue.buffering.max.messages": max(100_000, 4 * spec.max_records),
    }
    if spec.transactional_id is not None:
        producer_config["transactional.id"] = spec.transactional_id
    producer = confluent_kafka.Producer(producer_config)
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": spec.bootstrap,
            "group.id": spec.group,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.max.bytes": FETCH_MAX_BYTES,
            "max.partition.fetch.bytes": PARTITION_FETCH_MAX_BYTES,
        }
    )
    try:
        producer.list_topics(spec.sink, timeout=TRANSACTION_TIMEOUT_SECONDS)  # metadata before the clock
        if spec.transactional_id is not None:
            producer.init_transactions(TRANSACTION_TIMEOUT_SECONDS)
        consumer.subscribe([spec.source])
        consumed = batches = 0
        started: float | None = None
        while consumed < spec.records:
            messages = consumer.consume(num_messages=spec.max_records, timeout=CONSUME_TIMEOUT_SECONDS)
            if not messages:
                continue
            if started is None:
                started = time.perf_counter()
            if spec.transactional_id is not None:
                producer.begin_transaction()
            for message in messages:
                if message.error() is not None:
                    raise confluent_kafka.KafkaException(message.error())
                _produce(producer, spec, message.key())
            if spec.transactional_id is not None:
                producer.send_offsets_to_transaction(
                    consumer.position(consumer.assignment()),
                    consumer.consumer_group_metadata(),
                    TRANSACTION_TIMEOUT_SECONDS,
                )
                producer.commit_transaction(TRANSACTION_TIMEOUT_SECONDS)
            else:
                producer.poll(0)  # serve delivery reports
            consumed += len(messages)
            batches += 1
        remaining = producer.flush(TRANSACTION_TIMEOUT_SECONDS)
        if remaining:
            raise RuntimeError(f"{remaining} messages still undelivered after the final flush")
        assert started is not None
        seconds = time.perf_counter() - started
        return LoopFigure("confluent-kafka", spec.mode, "produce()", consumed, batches, seconds)
    finally:
        consumer.close()


def _produce(producer: Any, spec: LoopSpec, key: bytes | None) -> None:
    while True:
        try:
            producer.produce(spec.sink, value=spec.value, key=key, headers=spec.headers)
            return
        except BufferError:  # the local queue is full: let deliveries drain it
            producer.poll(0.05)
