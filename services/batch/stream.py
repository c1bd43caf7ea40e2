"""Kafka-fed scoring, exactly once from the request topics to the result topics.

One loop per replica: consume up to `max_batch_records` records (read_committed), parse them, resolve
each model they name once (so a batch is scored entirely by one version of each model, and an alias
moved by `model-promoted` takes effect at the next batch), score each version's rows in one
onnxruntime call, and then, in one Kafka transaction, produce a result per scored record, a dead
letter per record that could not be scored (to `<request topic>.dlq`, with the reason), and the
consumer's offsets. A crash anywhere before the commit aborts the transaction: nothing of the batch is
visible to read_committed consumers and its records are consumed again, so every input gets exactly
one result. A restarted replica (same `replica_id`) fences its dead self's open transaction at once.

Transient failures (the registry or Kafka not answering) abort the batch and retry it from its first
offset after a pause; records are never skipped. Replicas share the request topics' partitions through
the consumer group; on a rebalance, a replica finishes its batch in flight before giving partitions up.
A sample of the scored rows is reported to `prediction-logged` after each commit (best effort).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.errors import KafkaError, ProducerFenced
from aiokafka.producer.message_accumulator import BatchBuilder
from prometheus_client import Counter, Histogram

from services.batch.requests import (
    InvalidRequest,
    ScoringRequest,
    batch_headers,
    parse_request,
    result_headers,
    result_value,
)
from services.batch.scoring import ModelRef, ScoredRows, ScoringModels, ScoringVersion
from services.batch.settings import BatchSettings
from shared.bus import KafkaBus
from shared.events import CloudEvent, DeadLetter, Topic, dead_letter_topic
from shared.model_versions import ModelNotFound, ModelUnavailable, RegistryUnavailable
from shared.prediction_events import logged_request, prediction_logged_json

log = logging.getLogger(__name__)

RECORDS = Counter("flywheel_batch_records_total", "Scoring requests consumed", ["topic", "outcome"])
BATCH_SECONDS = Histogram(
    "flywheel_batch_seconds",
    "Time to score and commit one consumed batch",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RETRIES = Counter("flywheel_batch_retries_total", "Batches aborted and retried after a transient failure")

RETRY_PAUSE_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class DeadRecord:
    """A consumed record that cannot be scored, and why."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    reason: str

    @classmethod
    def of(cls, request: ScoringRequest, reason: str) -> DeadRecord:
        return cls(request.topic, request.partition, request.offset, request.key, request.value, reason)


SOURCE = "/flywheel/batch"


class ScoringStream:
    def __init__(self, bus: KafkaBus, models: ScoringModels, settings: BatchSettings) -> None:
        self.bus = bus
        self.models = models
        self.settings = settings
        self.group = bus.cluster_name(settings.consumer_group)
        # Topics as the cluster names them (namespaced) -> their plain names and defaults.
        self.request_topics = {bus.cluster_name(name): name for name in settings.request_topics}
        self.result_topics = {
            name: bus.cluster_name(topic.result_topic) for name, topic in settings.request_topics.items()
        }
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    def topics(self) -> list[str]:
        """Every topic the stream reads or writes (plain names), to be created at start."""
        names = []
        for topic, defaults in self.settings.request_topics.items():
            names += [topic, dead_letter_topic(topic), defaults.result_topic]
        return names

    async def start(self) -> None:
        await self.bus.ensure_topics(self.topics())
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bus.bootstrap_servers,
            client_id=f"{self.bus.client_id}-scoring",
            transactional_id=self.bus.cluster_name(self.settings.transactional_id),
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            max_batch_size=1024 * 1024,
            # Kafka 4 answers a new transaction's first produce with NOT_ENOUGH_REPLICAS while the last
            # one's markers are written (apache/kafka#14378); aiokafka's default 100 ms wait per retry
            # would stall a batch for longer than it takes to score.
            retry_backoff_ms=15,
        )
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bus.bootstrap_servers,
            client_id=f"{self.bus.client_id}-scoring",
            group_id=self.group,
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.settings.max_batch_records,
            fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )
        self._consumer.subscribe(list(self.request_topics), listener=_FinishBatchFirst(self._idle))
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name="scoring-stream")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(
                timeout_ms=500, max_records=self.settings.max_batch_records
            )
            if not batches:
                continue
            self._idle.clear()
            try:
                await self._process(batches)
            except ProducerFenced:
                log.critical("another replica took this replica's transactional id; stopping the stream")
                raise
            except (RegistryUnavailable, KafkaError, OSError) as error:
                RETRIES.inc()
                log.warning("batch aborted, retrying it", extra={"error": repr(error)})
                self._rewind(batches)
                await asyncio.sleep(RETRY_PAUSE_SECONDS)
            finally:
                self._idle.set()

    def _rewind(self, batches: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        """Consume the batch again from its first record (its transaction was aborted)."""
        assert self._consumer is not None
        for partition, records in batches.items():
            self._consumer.seek(partition, records[0].offset)

    async def _process(self, batches: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        assert self._producer is not None
        started = time.perf_counter()
        requests, dead = self._parse(record for records in batches.values() for record in records)
        versions, unresolved = await self._resolve({request.model for request in requests})
        by_version: dict[ModelRef, list[ScoringRequest]] = {}
        for request in requests:
            if request.model in unresolved:
                dead.append(DeadRecord.of(request, unresolved[request.model]))
            else:
                by_version.setdefault(request.model, []).append(request)
        now = datetime.now(UTC)
        shared_headers = batch_headers(now.isoformat().encode())
        scored_per_topic: collections.Counter[str] = collections.Counter()
        samples: list[tuple[ScoringVersion, list[ScoringRequest], ScoredRows]] = []
        async with self._producer.transaction():
            writer = PartitionWriter(self._producer)
            for ref, group in by_version.items():
                version = versions[ref]
                scored = await self.models.score(version, [request.features for request in group])
                dead += [DeadRecord.of(group[index], reason) for index, reason in scored.rejected.items()]
                for row, outputs in zip(scored.scored, scored.output_rows(), strict=True):
                    request = group[row]
                    topic = self.result_topics[request.topic]
                    await writer.append(
                        topic,
                        await writer.partition_for(topic, request.partition),
                        request.key,
                        result_value(request, version.version, outputs),
                        result_headers(request, shared_headers),
                    )
                    scored_per_topic[request.topic] += 1
                samples.append((version, group, scored))
            await writer.flush()
            for record in dead:
                await self._send_dead_letter(record)
                RECORDS.labels(record.topic, "dead_lettered").inc()
            await self._producer.send_offsets_to_transaction(
                {partition: records[-1].offset + 1 for partition, records in batches.items()}, self.group
            )
        for topic, count in scored_per_topic.items():
            RECORDS.labels(topic, "scored").inc(count)
        BATCH_SECONDS.observe(time.perf_counter() - started)
        await self._report_sample(samples, now, time.perf_counter() - started)

    def _parse(self, records: Iterable[ConsumerRecord]) -> tuple[list[ScoringRequest], list[DeadRecord]]:
        requests: list[ScoringRequest] = []
        dead: list[DeadRecord] = []
        for record in records:
            topic = self.request_topics[record.topic]
            try:
                requests.append(
                    parse_request(
                        topic,
                        record.partition,
                        record.offset,
                        record.key,
                        record.value,
                        self.settings.request_topics[topic],
                    )
                )
            except InvalidRequest as error:
                dead.append(
                    DeadRecord(
                        topic, record.partition, record.offset, record.key, record.value or b"", str(error)
                    )
                )
        return requests, dead

    async def _resolve(
        self, refs: set[ModelRef]
    ) -> tuple[dict[ModelRef, ScoringVersion], dict[ModelRef, str]]:
        """Each model the batch names, once; those that cannot be scored with the reason."""
        versions: dict[ModelRef, ScoringVersion] = {}
        unresolved: dict[ModelRef, str] = {}
        for ref in refs:
            try:
                versions[ref] = await self.models.resolve(ref)
            except (ModelNotFound, ModelUnavailable) as error:
                unresolved[ref] = str(error)
        return versions, unresolved

    async def _send_dead_letter(self, record: DeadRecord) -> None:
        assert self._producer is not None
        letter = DeadLetter.of_raw(
            record.value,
            source_topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=None if record.key is None else record.key.decode("utf-8", "replace"),
            consumer_group=self.settings.consumer_group,
            error=record.reason,
            attempts=1,
        )
        await self._producer.send(
            self.bus.cluster_name(dead_letter_topic(record.topic)),
            value=CloudEvent.wrap(letter, source=SOURCE, subject=record.topic).to_json(),
            key=record.key,
            headers=[("content-type", b"application/cloudevents+json")],
        )

    async def _report_sample(
        self,
        samples: list[tuple[ScoringVersion, list[ScoringRequest], ScoredRows]],
        at: datetime,
        seconds: float,
    ) -> None:
        """Report a sample of the committed batch's scored rows to prediction-logged (best effort: a
        failure is logged, never retried, and never affects the results)."""
        rate = self.settings.prediction_log_sample_rate
        if rate <= 0:
            return
        for version, group, scored in samples:
            chosen = [position for position in range(len(scored.scored)) if random.random() < rate]
            if not chosen:
                continue
            rows = np.asarray(chosen)
            requests = [group[scored.scored[position]] for position in chosen]
            event = prediction_logged_json(
                model=version.name,
                version=version.version,
                requests=[
                    logged_request(request.request_id, 1, seconds * 1000 / len(group), at)
                    for request in requests
                ],
                inputs={name: array[rows] for name, array in scored.inputs.items()},
                outputs={name: array[rows] for name, array in scored.outputs.items()},
                source=SOURCE,
            )
            try:
                await self.bus.publish_raw(Topic.PREDICTION_LOGGED, event, key=version.name.encode())
            except Exception as error:
                log.warning("reporting scored rows to prediction-logged failed", extra={"error": repr(error)})


class PartitionWriter:
    """Results appended straight into one record batch per partition, sent when full and at `flush`:
    aiokafka's per-message `send` (a future, a partitioner call and an accumulator lookup per record)
    costs more than scoring the record. A result goes to the partition number of its request (modulo
    the result topic's partitions), so one key's results stay in order on one partition without hashing
    the key again."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer
        self._builders: dict[tuple[str, int], BatchBuilder] = {}
        self._partitions: dict[str, int] = {}

    async def partition_for(self, topic: str, source_partition: int) -> int:
        if topic not in self._partitions:
            self._partitions[topic] = len(await self.producer.partitions_for(topic))
        return source_partition % self._partitions[topic]

    async def append(
        self, topic: str, partition: int, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        builder = self._builders.get((topic, partition))
        if builder is None:
            builder = self._builders[(topic, partition)] = self.producer.create_batch()
        if builder.append(key=key, value=value, timestamp=None, headers=headers) is None:  # full
            await self.producer.send_batch(builder, topic, partition=partition)
            builder = self._builders[(topic, partition)] = self.producer.create_batch()
            if builder.append(key=key, value=value, timestamp=None, headers=headers) is None:
                raise ValueError(f"a result of {len(value)} bytes does not fit in a record batch")

    async def flush(self) -> None:
        """Send every partly filled batch (the transaction's commit waits for their delivery)."""
        builders, self._builders = self._builders, {}
        for (topic, partition), builder in builders.items():
            if builder.record_count():
                await self.producer.send_batch(builder, topic, partition=partition)


class _FinishBatchFirst(ConsumerRebalanceListener):  # type: ignore[misc]
    """Before partitions go to another replica, let the batch in flight commit (or abort), so the new
    owner starts exactly where this replica's committed offsets say."""

    def __init__(self, idle: asyncio.Event) -> None:
        self.idle = idle

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.idle.wait()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        pass
