"""The scoring stream's pipeline: a batch is scored while the one before it commits, yet a batch scored
ahead of a rebalance or of a failed commit is never committed; it is consumed again instead, so every
record is committed exactly once. Kafka is faked here (the real thing: tests/integration)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError, ProducerFenced

from services.batch import stream as stream_module
from services.batch.app import STREAM_FAILED_EXIT_CODE
from services.batch.consumer import PartitionRecords
from services.batch.record_batches import ResultBatch
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
    """Partitions of requests, each consumed from a position that `seek` moves, one partition a `getmany`
    in turn; while partitions are being reassigned `getmany` waits, as aiokafka's does."""

    def __init__(self, per_partition: int, partitions: int = 1) -> None:
        value = orjson.dumps({"features": [0.1, 0.2, 0.3, 0.4], "model": "credit"})
        self.records = {
            TopicPartition(TOPIC, partition): PartitionRecords(
                list(range(per_partition)),
                [b"k%d" % offset for offset in range(per_partition)],
                [value] * per_partition,
            )
            for partition in range(partitions)
        }
        self.positions = dict.fromkeys(self.records, 0)
        self.empty_polls = 0
        self.assigned = asyncio.Event()
        self.assigned.set()
        self._turn = 0

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, PartitionRecords]:
        await self.assigned.wait()
        partitions = list(self.records)
        for step in range(len(partitions)):
            partition = partitions[(self._turn + step) % len(partitions)]
            batch = self.records[partition][
                self.positions[partition] : self.positions[partition] + max_records
            ]
            if batch:
                self._turn += step + 1
                self.positions[partition] += len(batch)
                return {partition: batch}
        self.empty_polls += 1
        await asyncio.sleep(0.01)
        return {}

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.positions[partition] = offset

    async def stop(self) -> None:
        pass

    async def drained(self) -> None:
        """Every record consumed and the last batch's commit over: the stream polls twice in vain (the
        second poll starts only once the batch before the first is committed)."""
        self.empty_polls = 0

        def done() -> bool:
            consumed = all(self.positions[p] == len(records) for p, records in self.records.items())
            return self.empty_polls >= 2 and consumed

        await eventually(done, what="drained")


class FakeProducer:
    """A transactional producer whose commits can be held (`gate`) or made to fail once."""

    def __init__(self) -> None:
        self.committed: list[dict[int, int]] = []  # each commit's offsets, by partition
        self.results = 0  # results committed
        self.gate = asyncio.Event()
        self.gate.set()
        self.committing = asyncio.Event()
        self.fail_next_commit = False
        self._sent = 0
        self._offsets: dict[int, int] = {}

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        self._sent, self._offsets = 0, {}
        yield
        self.committing.set()
        await self.gate.wait()
        if self.fail_next_commit:
            self.fail_next_commit = False
            raise KafkaConnectionError("the commit failed")
        self.committed.append(self._offsets)
        self.results += self._sent

    async def send_batch(self, batch: ResultBatch, topic: str, *, partition: int) -> None:
        self._sent += batch.record_count()

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2}

    async def send_offsets_to_transaction(self, offsets: dict[TopicPartition, int], group: str) -> None:
        self._offsets = {partition.partition: offset for partition, offset in offsets.items()}

    async def stop(self) -> None:
        pass


class CountingModels(ScoringModels):
    """Counts the batches it scores; can hold the second one (`hold_second`) until told to go on."""

    started = 0
    scored_batches = 0
    hold_second: asyncio.Event | None = None

    async def score(self, version: ScoringVersion, rows: list[Any]) -> ScoredRows:
        self.started += 1
        if self.started == 2 and self.hold_second is not None:
            await self.hold_second.wait()
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
        assert producer.committed == [{0: BATCH_RECORDS}]
        consumer.seek(PARTITION, BATCH_RECORDS)  # the new assignment starts at the committed offset
        consumer.assigned.set()
        await consumer.drained()
    finally:
        running.cancel()
    assert producer.committed == [{0: BATCH_RECORDS}, {0: 2 * BATCH_RECORDS}]
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
    assert producer.committed == [{0: BATCH_RECORDS}, {0: 2 * BATCH_RECORDS}, {0: 3 * BATCH_RECORDS}]
    assert producer.results == 3 * BATCH_RECORDS


async def test_a_failed_commit_consumes_again_the_batch_cut_short_while_scored_ahead(
    models: CountingModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch ahead comes from another partition than the failed one, and its scoring is cut short."""
    monkeypatch.setattr(stream_module, "RETRY_PAUSE_SECONDS", 0.01)
    consumer, producer = FakeConsumer(2 * BATCH_RECORDS, partitions=2), FakeProducer()
    stream = streaming(models, consumer, producer)
    producer.gate.clear()
    producer.fail_next_commit = True
    models.hold_second = asyncio.Event()
    running = asyncio.create_task(stream._run())
    try:
        await producer.committing.wait()
        await eventually(lambda: models.started == 2, what="the second batch being scored")
        producer.gate.set()  # the first batch's commit fails while the second is still being scored
        await eventually(lambda: producer.committed != [], what="a commit after the failed one")
        models.hold_second.set()
        await consumer.drained()
    finally:
        running.cancel()
    assert producer.results == 4 * BATCH_RECORDS
    last = {partition: offset for offsets in producer.committed for partition, offset in offsets.items()}
    assert last == {0: 2 * BATCH_RECORDS, 1: 2 * BATCH_RECORDS}


async def test_the_batch_after_next_is_consumed_while_the_next_is_scored_and_both_rewound_on_a_failure(
    models: CountingModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream_module, "RETRY_PAUSE_SECONDS", 0.01)
    consumer, producer = FakeConsumer(3 * BATCH_RECORDS), FakeProducer()
    stream = streaming(models, consumer, producer)
    models.hold_second = asyncio.Event()
    running = asyncio.create_task(stream._run())
    try:
        await eventually(lambda: producer.committed == [{0: BATCH_RECORDS}], what="the first batch committed")
        await eventually(lambda: models.started == 3, what="the third batch scored")
        assert models.scored_batches == 2, "the second batch is still being scored"
        producer.fail_next_commit = True  # the second batch's commit fails: the third is dropped too
        models.hold_second.set()
        await consumer.drained()
    finally:
        running.cancel()
    assert producer.committed == [{0: n * BATCH_RECORDS} for n in range(1, 4)]
    assert producer.results == 3 * BATCH_RECORDS


class FencedProducer(FakeProducer):
    """Another replica took this one's transactional id: nothing it sends can commit."""

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        yield
        raise ProducerFenced()


async def test_a_stream_that_cannot_go_on_says_so_at_once_and_hands_over(
    models: CountingModels, caplog: pytest.LogCaptureFixture
) -> None:
    """An error the stream does not retry stops it: logged as it happens, and `on_failure` called (the
    service then ends its worker process, so that a new one takes the partitions), not left to stop()."""
    failures: list[BaseException] = []
    stream = streaming(models, FakeConsumer(BATCH_RECORDS), FencedProducer())
    stream.on_failure = failures.append
    stream._run_in_background()
    await eventually(lambda: bool(failures), what="the failure reported")
    assert isinstance(failures[0], ProducerFenced)
    assert "the scoring stream stopped" in [r.message for r in caplog.records if r.levelname == "CRITICAL"]
    await stream.stop()  # already reported: stopping does not raise it again


def test_the_service_ends_a_worker_whose_stream_failed_with_its_log_written() -> None:
    """What the service passes as `on_failure`: the process ends at once (uvicorn or the orchestrator
    starts another), with a code that says it failed and the log line that said why."""
    script = (
        "import logging, sys; logging.basicConfig(stream=sys.stderr);"
        "from services.batch.app import exit_to_be_replaced;"
        "logging.getLogger('stream').critical('the scoring stream stopped');"
        "exit_to_be_replaced(RuntimeError('fenced'))"
    )
    ended = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert ended.returncode == STREAM_FAILED_EXIT_CODE == 70
    assert "the scoring stream stopped" in ended.stderr
