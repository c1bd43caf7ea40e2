"""The benchmark's own Kafka work: creating its topics, filling the request topic, following a consumer
group's committed offsets, and reading every committed result back to check it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.producer.message_accumulator import BatchBuilder

# Producer batches up to this size: below the broker's default message.max.bytes (1 MiB).
PRODUCE_BATCH_BYTES = 1_000_000
FETCH_MAX_BYTES = 64 * 1024 * 1024
PARTITION_FETCH_MAX_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class ProduceFigure:
    records: int
    bytes: int
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return self.records / self.seconds


async def create_topics(bootstrap: str, names: Iterable[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1) for name in names])
    finally:
        await admin.close()


async def produce_requests(
    bootstrap: str, topic: str, records: Iterable[tuple[bytes, bytes]], partitions: int
) -> ProduceFigure:
    """Every record into `topic`, spread over its partitions in turn, in whole batches built by the
    caller (aiokafka's fastest path: no per-record future, no partitioner); timed until all are acked."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=100, max_batch_size=PRODUCE_BATCH_BYTES
    )
    await producer.start()
    try:
        started = time.perf_counter()
        builders = [producer.create_batch() for _ in range(partitions)]
        delivered: list[asyncio.Future[object]] = []
        count = size = 0
        for key, value in records:
            partition = count % partitions
            if builders[partition].append(key=key, value=value, timestamp=None) is None:
                delivered.append(await producer.send_batch(builders[partition], topic, partition=partition))
                builders[partition] = producer.create_batch()
                _append(builders[partition], key, value)
            count += 1
            size += len(key) + len(value)
        for partition, builder in enumerate(builders):
            if builder.record_count():
                delivered.append(await producer.send_batch(builder, topic, partition=partition))
        await asyncio.gather(*delivered)
        return ProduceFigure(count, size, time.perf_counter() - started)
    finally:
        await producer.stop()


def _append(builder: BatchBuilder, key: bytes, value: bytes) -> None:
    if builder.append(key=key, value=value, timestamp=None) is None:
        raise ValueError(f"a record of {len(key) + len(value)} bytes does not fit an empty batch")


class GroupProgress:
    """How many records of `topic` a consumer group has committed (the sum of its committed offsets): for
    the batch service, the records whose results are committed, since both go in one transaction. Cheap
    to ask often, unlike reading the results, which would take CPU from the service being measured."""

    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.group = group
        self.topic = topic
        self._admin: AIOKafkaAdminClient | None = None

    async def start(self) -> None:
        self._admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)  # on the running loop
        await self._admin.start()

    async def close(self) -> None:
        if self._admin is not None:
            await self._admin.close()

    async def committed(self) -> int:
        assert self._admin is not None, "GroupProgress.start() first"
        offsets = await self._admin.list_consumer_group_offsets(self.group)
        return sum(
            position.offset
            for partition, position in offsets.items()
            if partition.topic == self.topic and position.offset > 0
        )


@dataclass(frozen=True)
class ResultCheck:
    """What the result topic holds, read back with read_committed after the run."""

    results: int
    distinct_keys: int
    missing_keys: int
    foreign_keys: int  # keys that are no request's
    label_mismatches: int  # labels that differ from in-process onnxruntime on the same row
    mean_value_bytes: float
    seconds: float

    @property
    def exactly_once(self) -> bool:
        return self.results == self.distinct_keys and not self.missing_keys and not self.foreign_keys

    @property
    def passed(self) -> bool:
        return self.exactly_once and not self.label_mismatches


async def check_results(
    bootstrap: str,
    topic: str,
    partition_count: int,
    expected: int,
    pool_labels: np.ndarray,
    timeout_seconds: float = 300.0,
) -> ResultCheck:
    """Read every committed result of `topic` (up to its last stable offset) and check that keys
    `entity-0` .. `entity-<expected-1>` each appear exactly once with the label `pool_labels` gives."""
    started = time.perf_counter()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        enable_auto_commit=False,
        fetch_max_bytes=FETCH_MAX_BYTES,
        max_partition_fetch_bytes=PARTITION_FETCH_MAX_BYTES,
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(partition_count)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        seen = np.zeros(expected, dtype=np.int32)
        results = foreign = mismatches = value_bytes = 0
        deadline = time.monotonic() + timeout_seconds
        while [p for p in partitions if await consumer.position(p) < ends[p]]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} back took over {timeout_seconds:.0f}s")
            batches = await consumer.getmany(timeout_ms=1000, max_records=50_000)
            for records in batches.values():
                for record in records:
                    results += 1
                    value = record.value or b""
                    value_bytes += len(value)
                    number = _record_number(record.key)
                    if number is None or number >= expected:
                        foreign += 1
                        continue
                    seen[number] += 1
                    label = orjson.loads(value)["outputs"]["label"]
                    if label != pool_labels[number % len(pool_labels)]:
                        mismatches += 1
        return ResultCheck(
            results=results,
            distinct_keys=int(np.count_nonzero(seen)),
            missing_keys=int(np.count_nonzero(seen == 0)),
            foreign_keys=foreign,
            label_mismatches=mismatches,
            mean_value_bytes=value_bytes / results if results else 0.0,
            seconds=time.perf_counter() - started,
        )
    finally:
        await consumer.stop()


def _record_number(key: bytes | None) -> int | None:
    if key is None or not key.startswith(b"entity-"):
        return None
    try:
        return int(key[len(b"entity-") :])
    except ValueError:
        return None
