"""Kafka-fed scoring, exactly once from the request topics to the result topics.

One loop per replica, in two stages that overlap. Scoring a batch: consume up to `max_batch_records`
records (read_committed), parse them, resolve each model they name once (so a batch is scored entirely
by one version of each model, and an alias moved by `model-promoted` takes effect at the next batch
scored), score each version's rows in one onnxruntime call, and write the results into record batches,
sending nothing. Committing it, in one Kafka transaction: a result per scored record, a dead letter per
record that could not be scored (to `<request topic>.dlq`, with the reason), and the consumer's
offsets. Batch N+1 is scored while batch N commits, and batch N+2 consumed and parsed while N+1 is
scored. A crash anywhere before the commit aborts the transaction: nothing of the batch is visible to
read_committed consumers and its records are consumed again, so every input gets exactly one result. A
restarted replica (same `replica_id`) fences its dead self's open transaction at once.

Transient failures (the registry or Kafka not answering) abort the batch and retry it from its first
offset after a pause, with the batches scored ahead of it; records are never skipped. Any other error
stops the stream, which says so at once and calls `on_failure` (the service ends the worker, to be
replaced). Replicas share the request topics' partitions through the consumer group; on a rebalance, a
replica finishes its batch in flight and drops those scored ahead (never committing them) before giving
partitions up. A sample of the scored rows is reported to `prediction-logged` after each commit (best
effort).

Records are consumed with confluent-kafka (`services.batch.consumer`: librdkafka fetches and decodes in
its own threads) and the transactions are aiokafka's. From the consumer to the record batches sent,
records are columns, never an object each: `PartitionRecords` as consumed, `PartitionRequests` by model
as parsed, and results written straight into record batches (`PartitionWriter`,
`services.batch.record_batches`).
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, ProducerFenced
from prometheus_client import Counter, Histogram

from services.batch.consumer import Batches, PartitionRecords, ThreadedConsumer
from services.batch.record_batches import Parts, ResultBatch, encode_records
from services.batch.requests import (
    PartitionRequests,
    ScoringRequest,
    batch_headers,
    features_for,
    parse_requests,
    result_records,
)
from services.batch.scoring import ModelRef, ScoredRows, ScoringModels, ScoringVersion
from services.batch.settings import BatchSettings
from shared.bus import KafkaBus
from shared.events import CloudEvent, DeadLetter, Topic, dead_letter_topic
from shared.model_versions import ModelNotFound, ModelUnavailable, RegistryUnavailable
from shared.prediction_events import events_that_fit, logged_request, prediction_logged_json

log = logging.getLogger(__name__)

RECORDS = Counter("flywheel_batch_records_total", "Scoring requests consumed", ["topic", "outcome"])
BATCH_SECONDS = Histogram(
    "flywheel_batch_seconds",
    "Time to score and commit one consumed batch",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RETRIES = Counter("flywheel_batch_retries_total", "Batches aborted and retried after a transient failure")

RETRY_PAUSE_SECONDS = 1.0
_random = np.random.default_rng()  # which scored rows are reported to prediction-logged
# Batches consumed and not committing yet: the one to commit next, and the one after it, consumed and parsed
# while the first is still scored (onnxruntime) and written.
BATCHES_IN_FLIGHT = 2
# A batch scored ahead is parsed and written in slices of this many records, the event loop free in
# between: each round trip of the committing batch's transaction would otherwise wait for a whole stage.
SLICE_RECORDS = 1000
# The most a record batch of results holds (the broker's default `message.max.bytes` is 1 MiB and a bit).
MAX_RECORD_BATCH_BYTES = 1024 * 1024


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
    def of(cls, requests: PartitionRequests, index: int, reason: str) -> DeadRecord:
        """A request that cannot be scored after all."""
        return cls.consumed(requests.topic, requests.partition, requests, index, reason)

    @classmethod
    def consumed(
        cls,
        topic: str,
        partition: int,
        records: PartitionRecords | PartitionRequests,
        index: int,
        reason: str,
    ) -> DeadRecord:
        """A consumed record (`topic`'s plain name) that is no request, or cannot be scored."""
        value = records.values[index]
        return cls(topic, partition, records.offsets[index], records.keys[index], value or b"", reason)


SOURCE = "/flywheel/batch"


@dataclass(slots=True)
class ScoredBatch:
    """A consumed batch made ready to commit, nothing of it sent yet: its results already in record
    batches, its dead letters, and the rows to report."""

    records: Batches  # as consumed, by partition, in order
    generation: int  # of the partition assignment it was consumed under
    results: PartitionWriter
    started: float
    at: datetime
    dead: list[DeadRecord] = field(default_factory=list)
    samples: list[tuple[ScoringVersion, list[PartitionRequests], ScoredRows]] = field(default_factory=list)
    error: Exception | None = None  # a transient failure while scoring it: the batch is retried


class ScoringStream:
    def __init__(
        self,
        bus: KafkaBus,
        models: ScoringModels,
        settings: BatchSettings,
        *,
        worker: int = 0,
        on_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        """`worker`: this process's number among the replica's workers (its transactional id's suffix).
        `on_failure`: called (after the failure is logged) when the stream stops on an error it cannot
        retry (a fenced producer, a bug): the service ends the process, so that it is replaced."""
        self.bus = bus
        self.models = models
        self.settings = settings
        self.worker = worker
        self.on_failure = on_failure
        self.group = bus.cluster_name(settings.consumer_group)
        # Topics as the cluster names them (namespaced) -> their plain names and defaults.
        self.request_topics = {bus.cluster_name(name): name for name in settings.request_topics}
        self.result_topics = {
            name: bus.cluster_name(topic.result_topic) for name, topic in settings.request_topics.items()
        }
        self._consumer: ThreadedConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()  # no batch being scored and committed
        self._idle.set()
        self._generation = 0  # of the partition assignment; a rebalance moves it on
        self._consumed: list[
            ScoredBatch
        ] = []  # consumed ahead of the batch committing, in order, until taken

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
            transactional_id=self.bus.cluster_name(self.settings.transactional_id(self.worker)),
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
        self._consumer = ThreadedConsumer(
            service_consumer_config(self.bus.bootstrap_servers, self.group, f"{self.bus.client_id}-scoring"),
            list(self.request_topics),
            revoked=self._partitions_revoked,
        )
        await self._consumer.start()
        self._run_in_background()

    def _run_in_background(self) -> None:
        self._task = asyncio.create_task(self._run(), name="scoring-stream")
        self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        """A stream that stops on its own stopped on an error: said at once, not at shutdown."""
        if task.cancelled() or (error := task.exception()) is None:
            return
        log.critical("the scoring stream stopped", exc_info=error)
        if self.on_failure is not None:
            self.on_failure(error)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):  # a failure was logged as it came
                await self._task
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()

    async def _run(self) -> None:
        # While batch N's transaction is sent and committed, batch N+1 is consumed, parsed, scored
        # (onnxruntime, in its own threads) and written into record batches; once N is committed, N+2 is
        # consumed and parsed while N+1 is still being scored. The event loop works on one while the broker
        # or onnxruntime works on another; batches are consumed, parsed and committed in turn.
        ahead: collections.deque[tuple[asyncio.Task[ScoredBatch], asyncio.Event]] = collections.deque()
        try:
            while True:
                while len(ahead) < BATCHES_IN_FLIGHT:
                    after = ahead[-1][1] if ahead else None
                    parsed = asyncio.Event()
                    ahead.append((asyncio.create_task(self._score_next(after, parsed)), parsed))
                batch = await ahead[0][0]
                ahead.popleft()
                self._consumed = [consumed for consumed in self._consumed if consumed is not batch]
                if not batch.records or batch.generation != self._generation:
                    continue  # consumed before a rebalance: the new assignment starts from committed offsets
                self._idle.clear()
                try:
                    await self._commit(batch)
                except ProducerFenced:
                    log.critical("another replica took this replica's transactional id; stopping the stream")
                    raise
                except (RegistryUnavailable, KafkaError, OSError) as error:
                    RETRIES.inc()
                    log.warning("batch aborted, retrying it", extra={"error": repr(error)})
                    await self._drop([task for task, _ in ahead])
                    ahead.clear()
                    self._rewind(batch.records)
                    await asyncio.sleep(RETRY_PAUSE_SECONDS)
                finally:
                    self._idle.set()
        finally:
            for task, _ in ahead:
                task.cancel()

    async def _partitions_revoked(self) -> None:
        """Let the batch in flight commit (or abort) and drop those scored ahead of it, so that the
        partitions' next owner starts exactly where this replica's committed offsets say."""
        self._generation += 1
        await self._idle.wait()

    async def _drop(self, ahead: list[asyncio.Task[ScoredBatch]]) -> None:
        """Give up the batches being scored ahead, to consume them again later. Cancelled, not awaited:
        a `getmany` would wait through a rebalance, which waits for this batch to end (a `getmany`
        cancelled gives back what it consumed)."""
        for task in ahead:
            task.cancel()
        if ahead:
            await asyncio.wait(ahead)
        for batch in reversed(self._consumed):  # consumed, whether scored or cut short; the first seek last
            self._rewind(batch.records)
        self._consumed.clear()
        for task in ahead:
            if not task.cancelled() and (error := task.exception()) is not None:
                raise error  # not transient: the stream stops, as it would have on this batch's turn

    def _rewind(self, batches: Batches) -> None:
        """Consume these records again from their first (their transaction was aborted)."""
        assert self._consumer is not None
        for partition, records in batches.items():
            self._consumer.seek(partition, records.offsets[0])

    async def _score_next(self, after: asyncio.Event | None, parsed: asyncio.Event) -> ScoredBatch:
        """The next batch consumed (once the batch before it is parsed: `after`) and scored, with nothing
        sent: no side effect a rebalance or a failed transaction would have to undo. `parsed` is set once
        its records are parsed."""
        assert self._consumer is not None
        assert self._producer is not None
        try:
            if after is not None:
                await after.wait()
            records = await self._consumer.getmany(
                timeout_ms=500, max_records=self.settings.max_batch_records
            )
            batch = ScoredBatch(
                records,
                self._generation,  # after getmany: a rebalance during it has moved the generation on
                PartitionWriter(self._producer, int(time.time() * 1000)),
                time.perf_counter(),
                datetime.now(UTC),
            )
            self._consumed.append(batch)
            try:
                await self._score(batch, parsed)
            except (RegistryUnavailable, KafkaError, OSError) as error:
                batch.error = error
            return batch
        finally:
            parsed.set()

    async def _score(self, batch: ScoredBatch, parsed: asyncio.Event) -> None:
        requests, batch.dead = await self._parse(batch.records)
        parsed.set()  # the next batch may be consumed and parsed while this one is scored
        versions, unresolved = await self._resolve(set(requests))
        for ref, reason in unresolved.items():
            batch.dead += [
                DeadRecord.of(part, index, reason) for part in requests[ref] for index in range(len(part))
            ]
        shared_headers = batch_headers(batch.at.isoformat().encode())
        for ref, version in versions.items():
            parts = requests[ref]
            scored = await self.models.score(version, features_for(parts, version.signature))
            for part, outputs, rejected in scored_parts(parts, scored):
                batch.dead += [DeadRecord.of(part, index, reason) for index, reason in rejected.items()]
                if rejected:
                    part = part.take([index for index in range(len(part)) if index not in rejected])
                await asyncio.sleep(0)
                self._write_results(batch.results, version, part, outputs, shared_headers)
            batch.samples.append((version, parts, scored))

    async def _commit(self, batch: ScoredBatch) -> None:
        """The batch's results, dead letters and consumer offsets in one transaction."""
        assert self._producer is not None
        if batch.error is not None:
            raise batch.error
        async with self._producer.transaction():
            await batch.results.send()
            for record in batch.dead:
                await self._send_dead_letter(record)
            await self._producer.send_offsets_to_transaction(
                {partition: records.offsets[-1] + 1 for partition, records in batch.records.items()},
                self.group,
            )
        self._count(batch)
        seconds = time.perf_counter() - batch.started
        BATCH_SECONDS.observe(seconds)
        await self._report_sample(batch.samples, batch.at, seconds)

    def _write_results(
        self,
        writer: PartitionWriter,
        version: ScoringVersion,
        requests: PartitionRequests,
        outputs: dict[str, np.ndarray],
        shared_headers: list[tuple[str, bytes]],
    ) -> None:
        """The requests' results (`outputs` has a row each) into their partition's record batches."""
        if not len(requests):
            return
        keys, value, source = result_records(version.name, version.version, requests, outputs)
        headers = [("ce_id", source), *((name, [header]) for name, header in shared_headers)]
        writer.add(self.result_topics[requests.topic], requests.partition, keys, value, headers)

    def _count(self, batch: ScoredBatch) -> None:
        """Every consumed record was either scored or dead-lettered."""
        scored: collections.Counter[str] = collections.Counter()
        for partition, records in batch.records.items():
            scored[self.request_topics[partition.topic]] += len(records)
        for record in batch.dead:
            scored[record.topic] -= 1
            RECORDS.labels(record.topic, "dead_lettered").inc()
        for topic, count in scored.items():
            RECORDS.labels(topic, "scored").inc(count)

    async def _parse(
        self, records: Batches
    ) -> tuple[dict[ModelRef, list[PartitionRequests]], list[DeadRecord]]:
        """The records' requests by the model they name, and those that are no request."""
        requests: dict[ModelRef, list[PartitionRequests]] = {}
        dead: list[DeadRecord] = []
        for partition, consumed in records.items():
            topic = self.request_topics[partition.topic]
            defaults = self.settings.request_topics[topic]
            for start in range(0, len(consumed), SLICE_RECORDS):
                await asyncio.sleep(0)
                sliced = consumed[start : start + SLICE_RECORDS]
                parts, invalid = parse_requests(topic, partition.partition, sliced, defaults)
                for part in parts:
                    requests.setdefault(part.model, []).append(part)
                dead += [
                    DeadRecord.consumed(topic, partition.partition, sliced, index, str(reason))
                    for index, reason in invalid.items()
                ]
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
        samples: list[tuple[ScoringVersion, list[PartitionRequests], ScoredRows]],
        at: datetime,
        seconds: float,
    ) -> None:
        """Report a sample of the committed batch's scored rows to prediction-logged (best effort: a
        failure is logged, never retried, and never affects the results)."""
        rate = self.settings.prediction_log_sample_rate
        if rate <= 0:
            return
        for version, parts, scored in samples:
            chosen = np.flatnonzero(_random.random(len(scored.scored)) < rate)
            if not len(chosen):
                continue
            starts = list(itertools.accumulate(map(len, parts), initial=0))
            requests = []
            for position in chosen.tolist():
                index = scored.scored[position]  # among the parts' requests, in turn
                part = bisect.bisect_right(starts, index) - 1
                requests.append(parts[part].request(index - starts[part]))
            await self._report_rows(version, requests, chosen, scored, seconds * 1000 / starts[-1], at)

    async def _report_rows(
        self,
        version: ScoringVersion,
        requests: list[ScoringRequest],
        rows: np.ndarray,
        scored: ScoredRows,
        latency_ms: float,
        at: datetime,
    ) -> None:
        """The `requests` (rows `rows` of `scored`) to prediction-logged, in events Kafka takes."""

        def event(part: slice) -> bytes:
            return prediction_logged_json(
                model=version.name,
                version=version.version,
                requests=[
                    logged_request(request.request_id or request.source_id, 1, latency_ms, at)
                    for request in requests[part]
                ],
                inputs={name: array[rows[part]] for name, array in scored.inputs.items()},
                outputs={name: array[rows[part]] for name, array in scored.outputs.items()},
                source=SOURCE,
            )

        try:
            for _, value in events_that_fit(event, slice(0, len(rows))):
                await self.bus.publish_raw(Topic.PREDICTION_LOGGED, value, key=version.name.encode())
        except Exception as error:
            log.warning("reporting scored rows to prediction-logged failed", extra={"error": repr(error)})


def scored_parts(
    parts: list[PartitionRequests], scored: ScoredRows
) -> Iterator[tuple[PartitionRequests, dict[str, np.ndarray], dict[int, str]]]:
    """`scored` (the outcome of scoring the parts' requests in turn, in one call) part by part: each part,
    the outputs of its records that were scored (a row each, in order), and why each other was not (by
    its index in the part)."""
    kept = scored.scored  # in order: a part's records scored are a run of them, as are their outputs' rows
    start = 0
    for part in parts:
        end = start + len(part)
        first, last = bisect.bisect_left(kept, start), bisect.bisect_left(kept, end)
        outputs = {name: array[first:last] for name, array in scored.outputs.items()}
        rejected = {}
        if last - first != len(part):
            rejected = {
                index - start: reason for index, reason in scored.rejected.items() if start <= index < end
            }
        yield part, outputs, rejected
        start = end


def service_consumer_config(bootstrap_servers: str, group: str, client_id: str) -> dict[str, object]:
    """The scoring stream's consumer settings (librdkafka's names)."""
    return {
        "bootstrap.servers": bootstrap_servers,
        "client.id": client_id,
        "group.id": group,
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "fetch.max.bytes": 64 * 1024 * 1024,
        "max.partition.fetch.bytes": 8 * 1024 * 1024,
        # A member learns of a rebalance (a worker or replica joining) from a heartbeat's answer: at the
        # default 3 s, a joining worker waited that long for its share of the partitions.
        "heartbeat.interval.ms": 500,
    }


class PartitionWriter:
    """Results written into record batches per partition, built before their transaction and sent in it
    (`services.batch.record_batches`): aiokafka's per-message `send` (a future, a partitioner call and an
    accumulator lookup per record) costs more than scoring the record. A result goes to the partition number
    of its request (modulo the result topic's partitions), so one key's results stay in order on one
    partition without hashing the key again."""

    def __init__(
        self, producer: AIOKafkaProducer, timestamp_ms: int, max_batch_bytes: int = MAX_RECORD_BATCH_BYTES
    ) -> None:
        self.producer = producer
        self.timestamp_ms = timestamp_ms  # every result's
        self.max_batch_bytes = max_batch_bytes
        self._batches: dict[tuple[str, int], ResultBatch] = {}  # being filled, by topic and source partition
        self._full: list[tuple[str, int, ResultBatch]] = []

    def add(
        self,
        topic: str,
        source_partition: int,
        keys: list[bytes | None],
        value: Parts,
        headers: list[tuple[str, Parts]],
    ) -> None:
        """Records (a key each, their values and headers as `encode_records` takes them) to `topic`."""
        batch = self._batches.get((topic, source_partition))
        if batch is None:
            batch = self._batches[(topic, source_partition)] = self._new_batch()
        records, sizes = encode_records(batch.record_count(), keys, value, headers)
        fits = batch.room(sizes)
        if fits == len(keys):
            batch.add(records, len(keys))
            return
        # The batch is full after the first `fits`; the rest start a new batch, their offset deltas from 0.
        if fits:
            batch.add(records[: int(sizes[:fits].sum())], fits)
        self._full.append((topic, source_partition, batch))
        self._batches[(topic, source_partition)] = self._new_batch()
        self.add(topic, source_partition, *_records(keys, value, headers, fits))

    def batches(self) -> list[tuple[str, int, ResultBatch]]:
        """Every batch with its topic and source partition, in the order they were filled."""
        return self._full + [(topic, source, batch) for (topic, source), batch in self._batches.items()]

    async def send(self) -> None:
        """Send every batch, in the order they were filled (the transaction's commit waits for them)."""
        partitions: dict[str, int] = {}
        for topic, source_partition, batch in self.batches():
            if topic not in partitions:
                partitions[topic] = len(await self.producer.partitions_for(topic))
            await self.producer.send_batch(batch, topic, partition=source_partition % partitions[topic])

    def _new_batch(self) -> ResultBatch:
        return ResultBatch(self.max_batch_bytes, self.timestamp_ms)


def _records(
    keys: list[bytes | None], value: Parts, headers: list[tuple[str, Parts]], start: int
) -> tuple[list[bytes | None], Parts, list[tuple[str, Parts]]]:
    """The records from `start` on, of those given as `PartitionWriter.add` takes them."""

    def rest(parts: Parts) -> Parts:
        return [part if isinstance(part, bytes) else part[start:] for part in parts]

    return keys[start:], rest(value), [(name, rest(parts)) for name, parts in headers]
