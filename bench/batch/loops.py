"""The Kafka ceiling: the batch service's consume+produce loop with no model and no parsing. Each loop
reads the whole request topic from its start under a consumer group of its own (read_committed, the
service's fetch sizes, batches of the service's max records) and produces one result-sized message, with
the service's six headers, per record consumed:

- plain: consume and produce, pipelined; nothing waited for per batch (the client's ceiling);
- transactional: per batch, as the service does: begin, produce, send the consumer's offsets to the
  transaction, commit (which waits for every record of the batch to be acknowledged).

aiokafka produces in one of two ways: `send()` per record (its documented API: a future, the partitioner
and the accumulator per record), or `batches`: records appended straight into one record batch per
partition (`create_batch`, `send_batch`; a result goes to its request's partition number). The batch
service sends whole record batches too, but writes them itself (`services/batch/record_batches.py`); the
ceiling stays aiokafka's own client, as the issue asks. `confluent.py` has the same loops with
confluent-kafka (librdkafka).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.producer.message_accumulator import BatchBuilder

from bench.batch.topics import FETCH_MAX_BYTES, PARTITION_FETCH_MAX_BYTES

# As the batch service's producer (services/batch/stream.py).
PRODUCER_LINGER_MS = 5
PRODUCER_BATCH_BYTES = 1024 * 1024
POLL_TIMEOUT_MS = 500


@dataclass(frozen=True)
class LoopSpec:
    """One loop's run: from `source` (which holds exactly `records` records) to `sink`."""

    bootstrap: str
    source: str
    sink: str
    sink_partitions: int
    group: str
    records: int
    max_records: int
    value: bytes
    headers: list[tuple[str, bytes]]
    transactional_id: str | None = None  # None: the plain loop
    batches: bool = False  # aiokafka: whole record batches instead of send() per record

    @property
    def mode(self) -> str:
        return "plain" if self.transactional_id is None else "transactional"


@dataclass(frozen=True)
class LoopFigure:
    """A loop's rate from its first consumed batch until every record it produced was acknowledged."""

    client: str
    mode: str
    produce: str  # how records were produced: send(), batches, produce()
    records: int
    batches: int
    seconds: float
    cpu: dict[str, float] = field(default_factory=dict)
    produce_retries: int | None = None  # produce requests the broker refused and the client retried

    @property
    def rows_per_second(self) -> float:
        return self.records / self.seconds

    @property
    def label(self) -> str:
        return f"{self.client} {self.mode}, {self.produce}"


class _RetryCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "retrying" in record.getMessage()


@contextmanager
def counted_produce_retries() -> Iterator[_RetryCounter]:
    """Count aiokafka's "Got error produce response ..., retrying" warnings instead of printing them."""
    logger = logging.getLogger("aiokafka.producer.sender")
    counter = _RetryCounter()
    logger.addHandler(counter)
    try:
        yield counter
    finally:
        logger.removeHandler(counter)


async def aiokafka_loop(spec: LoopSpec) -> LoopFigure:
    with counted_produce_retries() as retries:
        figure = await _aiokafka_loop(spec)
    return dataclasses.replace(figure, produce_retries=retries.count)


async def _aiokafka_loop(spec: LoopSpec) -> LoopFigure:
    producer = AIOKafkaProducer(
        bootstrap_servers=spec.bootstrap,
        transactional_id=spec.transactional_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=PRODUCER_LINGER_MS,
        max_batch_size=PRODUCER_BATCH_BYTES,
    )
    consumer = AIOKafkaConsumer(
        spec.source,
        bootstrap_servers=spec.bootstrap,
        group_id=spec.group,
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=spec.max_records,
        fetch_max_bytes=FETCH_MAX_BYTES,
        max_partition_fetch_bytes=PARTITION_FETCH_MAX_BYTES,
    )
    await producer.start()
    await consumer.start()
    try:
        await producer.partitions_for(spec.sink)  # the sink's metadata before the clock starts
        consumed = batches = 0
        started: float | None = None
        while consumed < spec.records:
            fetched = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=spec.max_records)
            if not fetched:
                continue
            if started is None:
                started = time.perf_counter()
            produce = _produce_batches if spec.batches else _send
            if spec.transactional_id is None:
                await produce(producer, spec, fetched)
            else:
                async with producer.transaction():
                    await produce(producer, spec, fetched)
                    offsets = {partition: records[-1].offset + 1 for partition, records in fetched.items()}
                    await producer.send_offsets_to_transaction(offsets, spec.group)
            consumed += sum(len(records) for records in fetched.values())
            batches += 1
        await producer.flush()
        assert started is not None
        seconds = time.perf_counter() - started
        how = "batches" if spec.batches else "send()"
        return LoopFigure("aiokafka", spec.mode, how, consumed, batches, seconds)
    finally:
        await consumer.stop()
        await producer.stop()


async def _send(
    producer: AIOKafkaProducer, spec: LoopSpec, fetched: dict[TopicPartition, list[ConsumerRecord]]
) -> None:
    for records in fetched.values():
        for record in records:
            await producer.send(spec.sink, value=spec.value, key=record.key, headers=spec.headers)


async def _produce_batches(
    producer: AIOKafkaProducer, spec: LoopSpec, fetched: dict[TopicPartition, list[ConsumerRecord]]
) -> None:
    builders: dict[int, BatchBuilder] = {}
    for source, records in fetched.items():
        partition = source.partition % spec.sink_partitions
        builder = builders.get(partition) or producer.create_batch()
        builders[partition] = builder
        for record in records:
            if builder.append(key=record.key, value=spec.value, timestamp=None, headers=spec.headers) is None:
                await producer.send_batch(builder, spec.sink, partition=partition)  # full
                builder = builders[partition] = producer.create_batch()
                builder.append(key=record.key, value=spec.value, timestamp=None, headers=spec.headers)
    for partition, builder in builders.items():
        if builder.record_count():
            await producer.send_batch(builder, spec.sink, partition=partition)
