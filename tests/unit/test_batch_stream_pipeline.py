"""The scoring stream's pipeline: a batch is scored while the one before it commits, yet a batch scored
ahead of a rebalance or of a failed commit is never committed; it is consumed again instead, so every
record is committed exactly once. Kafka is faked here (the real thing: tests/integration)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaConnectionError
from aiokafka.producer.message_accumulator import BatchBuilder

from services.batch import stream as stream_module
from services.batch.scoring import ScoredRows, ScoringModels, ScoringVersion
from services.batch.settings import BatchSettings, RequestTopic
from services.batch.stream import ScoringStream
from shared.artifacts import FilesystemArtifactStore
from shared.bus import KafkaBus
from tests.models import tiny_classifier_onnx
from tests.unit.test_serving_models import Registry
from tests.waiting import eventually

TOPIC = "scoring-requests"
PARTITION = TopicPartition(TOPIC, 0)
BATCH_RECORDS = 4


class FakeBus:
    bootstrap_servers = "unused:9092"
    client_id = "test"

    def cluster_name(self, name: str) -> str:
        return name


class FakeConsumer:
    """One partition of requests, consumed from a position that `seek` moves; while partitions are being
    reassigned `getmany` waits, as aiokafka's does."""

    def __init__(self, count: int) -> None:
        value = orjson.dumps({"features": [0.1, 0.2, 0.3, 0.4], "model": "credit"})
        self.records = [
            ConsumerRecord(TOPIC, 0, offset, 0, 0, b"k%d" % offset, value, None, 3, len(value), ())
            for offset in range(count)
        ]
        self.position = 0
        self.empty_polls = 0
        self.assigned = asyncio.Event()
        self.assigned.set()

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[ConsumerRecord]]:
        await self.assigned.wait()
        batch = self.records[self.position : self.position + max_records]
        if not batch:
            self.empty_polls += 1
            await asyncio.sleep(0.01)
            return {}
        self.position += len(batch)
        return {PARTITION: batch}

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.position = offset

    async def drained(self) -> None:
        """Every record consumed and the last batch's commit over: the stream polls twice in vain (the
        second poll starts only once the batch before the first is committed)."""
        self.empty_polls = 0
        await eventually(lambda: self.empty_polls >= 2 and self.position == len(self.records), what="drained")


class FakeProducer:
    """A transactional producer whose commits can be held (`gate`) or made to fail once."""

    def __init__(self) -> None:
        self.committed: list[int] = []  # each commit's next offset
        self.results = 0  # results committed
        self.gate = asyncio.Event()
        self.gate.set()
        self.committing = asyncio.Event()
        self.fail_next_commit = False
        self._sent = 0
        self._offset = -1

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        self._sent, self._offset = 0, -1
        yield
        self.committing.set()
        await self.gate.wait()
        if self.fail_next_commit:
            self.fail_next_commit = False
            raise KafkaConnectionError("the commit failed")
        self.committed.append(self._offset)
        self.results += self._sent

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(1024 * 1024, 0, is_transactional=True)

    async def send_batch(self, builder: BatchBuilder, topic: str, *, partition: int) -> None:
        self._sent += builder.record_count()

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2}

    async def send_offsets_to_transaction(self, offsets: dict[TopicPartition, int], group: str) -> None:
        self._offset = offsets[PARTITION]


class CountingModels(ScoringModels):
    scored_batches = 0

    async def score(self, version: ScoringVersion, rows: list[Any]) -> ScoredRows:
        scored = await super().score(version, rows)
        self.scored_batches += 1
        return scored


@pytest.fixture
async def models(tmp_path: Path) -> CountingModels:
    store = FilesystemArtifactStore(tmp_path)
    await store.start()
    stored = await store.put_bytes("models/credit/model.onnx", tiny_classifier_onnx())
    registry = Registry(stored.uri, hashlib.sha256(tiny_classifier_onnx()).hexdigest())
    return CountingModels(registry.describe, store, intra_op_threads=1)


def streaming(models: ScoringModels, consumer: FakeConsumer, producer: FakeProducer) -> ScoringStream:
    settings = BatchSettings(
        request_topics={TOPIC: RequestTopic(result_topic="scoring-results")},
        max_batch_records=BATCH_RECORDS,
        prediction_log_sample_rate=0,
    )
    stream = ScoringStream(cast(KafkaBus, FakeBus()), models, settings)
    stream._consumer = cast(AIOKafkaConsumer, consumer)
    stream._producer = cast(AIOKafkaProducer, producer)
    return stream


async def test_a_batch_scored_ahead_of_a_rebalance_is_consumed_again_not_committed(
    models: CountingModels,
) -> None:
    consumer, producer = FakeConsumer(2 * BATCH_RECORDS), FakeProducer()
    stream = streaming(models, consumer, producer)
    producer.gate.clear()
    running = asyncio.create_task(stream._run())
    try:
        await producer.committing.wait()  # the first batch is committing...
        await eventually(lambda: models.scored_batches == 2, what="the second batch scored ahead")
        consumer.assigned.clear()  # a rebalance begins: aiokafka calls the listener
        revoking = asyncio.create_task(stream._partitions_revoked())
        await asyncio.wait([revoking], timeout=0.1)
        assert not revoking.done(), "partitions given up while a batch was committing"
        producer.gate.set()
        await revoking
        assert producer.committed == [BATCH_RECORDS]
        consumer.seek(PARTITION, producer.committed[-1])  # the new assignment starts at the commit
        consumer.assigned.set()
        await consumer.drained()
    finally:
        running.cancel()
    assert producer.committed == [BATCH_RECORDS, 2 * BATCH_RECORDS]
    assert producer.results == 2 * BATCH_RECORDS


async def test_a_failed_commit_consumes_its_batch_and_the_one_scored_ahead_again(
    models: CountingModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream_module, "RETRY_PAUSE_SECONDS", 0.01)
    consumer, producer = FakeConsumer(3 * BATCH_RECORDS), FakeProducer()
    stream = streaming(models, consumer, producer)
    producer.gate.clear()
    producer.fail_next_commit = True
    running = asyncio.create_task(stream._run())
    try:
        await producer.committing.wait()
        await eventually(lambda: models.scored_batches == 2, what="the second batch scored ahead")
        producer.gate.set()  # the first batch's commit fails
        await consumer.drained()
    finally:
        running.cancel()
    assert producer.committed == [BATCH_RECORDS, 2 * BATCH_RECORDS, 3 * BATCH_RECORDS]
    assert producer.results == 3 * BATCH_RECORDS
