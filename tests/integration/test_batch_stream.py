"""Kafka-fed scoring on the real servers: records scored into the result topic, the ones that cannot be
scored into the dead letters with their reason, exactly one result per input across a killed and
restarted worker, and a model promotion taking effect between batches."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka.admin import AdminClient

from shared.events import CloudEvent, DeadLetter, PredictionLogged, Topic
from tests.conftest import Infrastructure
from tests.integration.conftest import delete_topics, fresh_namespace
from tests.models import tiny_classifier_onnx
from tests.processes import ServiceProcess
from tests.waiting import eventually_true

ROWS = np.random.default_rng(3).normal(size=(64, 4)).round(4)


@dataclass
class Platform:
    infrastructure: Infrastructure
    namespace: str
    registry: httpx.AsyncClient
    environment: dict[str, str]
    logs: Path

    def topic(self, name: str) -> str:
        return f"{self.namespace}.{name}"

    def batch(self, **settings: str) -> ServiceProcess:
        environment = {
            **self.environment,
            "FLYWHEEL_BATCH_REPLICA_ID": "replica-1",
            "FLYWHEEL_BATCH_MAX_BATCH_RECORDS": "500",
            **settings,
        }
        return ServiceProcess("batch", environment, self.logs / f"batch-{uuid.uuid4().hex[:6]}.log")

    async def produce(self, records: list[tuple[bytes, Any]], topic: str = "scoring-requests") -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.infrastructure.kafka_bootstrap, linger_ms=20)
        await producer.start()
        try:
            for key, value in records:
                raw = value if isinstance(value, bytes) else orjson.dumps(value)
                await producer.send(self.topic(topic), value=raw, key=key)
            await producer.flush()
        finally:
            await producer.stop()

    async def read(self, topic: str, count: int, within: float = 60) -> list[Any]:
        """The first `count` committed records of `topic` (fails when fewer arrive within `within`)."""
        consumer = AIOKafkaConsumer(
            self.topic(topic),
            bootstrap_servers=self.infrastructure.kafka_bootstrap,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        records: list[Any] = []
        try:

            async def more() -> bool:
                batches = await consumer.getmany(timeout_ms=200)
                records.extend(record for batch in batches.values() for record in batch)
                return len(records) >= count

            await eventually_true(more, within=within, what=f"{count} records on {topic}")
        finally:
            await consumer.stop()
        return records

    async def read_available(self, topic: str, quiet_seconds: float = 3.0) -> int:
        """How many committed records `topic` holds, read until none arrives for `quiet_seconds`."""
        consumer = AIOKafkaConsumer(
            self.topic(topic),
            bootstrap_servers=self.infrastructure.kafka_bootstrap,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        count = 0
        try:
            while batches := await consumer.getmany(timeout_ms=int(quiet_seconds * 1000)):
                count += sum(len(batch) for batch in batches.values())
        finally:
            await consumer.stop()
        return count


@pytest.fixture
async def platform(
    infrastructure: Infrastructure, fresh_database_url: str, tmp_path: Path
) -> AsyncIterator[Platform]:
    namespace = fresh_namespace()
    environment = infrastructure.isolated_environment(fresh_database_url, namespace)
    registry = ServiceProcess("registry", environment, tmp_path / "registry.log").start()
    try:
        registry.wait_until_ready()
        async with httpx.AsyncClient(base_url=registry.url) as client:
            for _ in range(2):
                uploaded = await client.post(
                    "/models/credit/versions", files={"model": tiny_classifier_onnx()}
                )
                assert uploaded.status_code == 201, uploaded.text
            await client.put("/models/credit/aliases/production", json={"version": 1})
            yield Platform(
                infrastructure,
                namespace,
                client,
                {**environment, "FLYWHEEL_BATCH_REGISTRY_URL": registry.url},
                tmp_path,
            )
    finally:
        registry.stop()
        await delete_topics(infrastructure.kafka_bootstrap, namespace)


@pytest.fixture
def running_batch(platform: Platform) -> Iterator[ServiceProcess]:
    batch = platform.batch(FLYWHEEL_BATCH_PREDICTION_LOG_SAMPLE_RATE="1.0").start()
    batch.wait_until_ready()
    yield batch
    batch.stop()


def expected_labels(rows: np.ndarray) -> list[int]:
    session = onnxruntime.InferenceSession(tiny_classifier_onnx(), providers=["CPUExecutionProvider"])
    return [int(label) for label in session.run(["label"], {"X": rows.astype(np.float32)})[0]]


async def test_records_are_scored_into_the_result_topic_keyed_by_entity(
    platform: Platform, running_batch: ServiceProcess
) -> None:
    records = [
        (f"customer-{n}".encode(), {"features": row, "model": "credit"})
        for n, row in enumerate(ROWS.tolist())
    ]
    await platform.produce(records)
    results = await platform.read("scoring-results", len(records))
    assert len(results) == len(records)
    labels = expected_labels(ROWS)
    by_key = {result.key: orjson.loads(result.value) for result in results}
    for n in range(len(records)):
        result = by_key[f"customer-{n}".encode()]
        assert (result["model"], result["version"]) == ("credit", 1)
        assert result["outputs"]["label"] == labels[n]
        assert result["source"]["topic"] == "scoring-requests"
    headers = dict(results[0].headers)
    assert headers["ce_type"] == b"io.flywheel.scoring.result.v1"
    assert headers["ce_id"].startswith(b"scoring-requests-")

    logged = await platform.read(Topic.PREDICTION_LOGGED, 1)  # sample rate 1.0: every row reported
    event = CloudEvent.from_json(logged[0].value).payload_as(PredictionLogged)
    assert (event.model, event.version) == ("credit", 1)
    assert event.records()[0].request_id.startswith("scoring-requests-")


async def test_records_that_cannot_be_scored_go_to_the_dead_letters_with_the_reason(
    platform: Platform, running_batch: ServiceProcess
) -> None:
    good = ROWS[0].tolist()
    await platform.produce(
        [
            (b"ok-1", {"features": good, "model": "credit"}),
            (b"not-json", b"{nope"),
            (b"too-few", {"features": [1.0, 2.0], "model": "credit"}),
            (b"unknown-model", {"features": good, "model": "nope"}),
            (b"no-model", good),  # the default topic names no default model
            (b"ok-2", {"features": good, "model": "credit", "version": 2}),
        ]
    )
    results = await platform.read("scoring-results", 2)
    assert {(r.key, orjson.loads(r.value)["version"]) for r in results} == {(b"ok-1", 1), (b"ok-2", 2)}
    letters = await platform.read("scoring-requests.dlq", 4)
    reasons = {r.key: CloudEvent.from_json(r.value).payload_as(DeadLetter) for r in letters}
    assert "not JSON" in reasons[b"not-json"].error
    assert reasons[b"not-json"].value == "{nope"
    assert "has 2 values; the model expects 4" in reasons[b"too-few"].error
    assert "nope@production" in reasons[b"unknown-model"].error
    assert "has no default model" in reasons[b"no-model"].error
    assert reasons[b"too-few"].source_topic == "scoring-requests"


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_a_killed_worker_gives_every_input_exactly_one_result(platform: Platform, workers: str) -> None:
    """SIGKILL to the service and its worker processes mid-stream, then a restart: each worker's
    replacement takes its number, so its transactional id fences the dead one's open transaction."""
    total = 20_000
    rows = np.random.default_rng(5).normal(size=(total, 4)).round(3).tolist()
    await platform.produce(
        [(f"e-{n}".encode(), {"features": row, "model": "credit"}) for n, row in enumerate(rows)]
    )
    first = platform.batch(FLYWHEEL_BATCH_WORKERS=workers).start()
    try:
        first.wait_until_ready()
        await platform.read("scoring-results", 1000, within=120)  # mid-stream
    finally:
        first.kill()  # SIGKILL: a transaction may be open, nothing is flushed
    partial = await platform.read_available("scoring-results")
    assert 1000 <= partial < total, f"{partial} of {total} scored before the kill: not mid-stream"
    second = platform.batch(FLYWHEEL_BATCH_WORKERS=workers).start()
    try:
        second.wait_until_ready()
        results = await platform.read("scoring-results", total, within=180)
    finally:
        second.stop()
    sources = Counter(
        (orjson.loads(r.value)["source"]["partition"], orjson.loads(r.value)["source"]["offset"])
        for r in results
    )
    assert len(results) == total, f"{len(results)} results for {total} inputs"
    assert max(sources.values()) == 1
    assert Counter(r.key for r in results) == Counter(f"e-{n}".encode() for n in range(total))


async def test_a_replicas_workers_share_the_partitions_and_give_every_input_one_result(
    platform: Platform,
) -> None:
    group = platform.topic("batch-scoring")  # the consumer group, namespaced like the topics
    batch = platform.batch(FLYWHEEL_BATCH_WORKERS="2").start()
    try:
        batch.wait_until_ready()

        async def both_workers_hold_partitions() -> bool:
            members = await asyncio.to_thread(group_members, platform, group)
            return len(members) == 2 and all(members.values())

        # uvicorn starts the second worker once the first is ready: its joining moves partitions over.
        await eventually_true(both_workers_hold_partitions, within=60, what="two workers sharing partitions")
        total = 6_000
        rows = np.random.default_rng(7).normal(size=(total, 4)).round(3).tolist()
        await platform.produce(
            [(f"w-{n}".encode(), {"features": row, "model": "credit"}) for n, row in enumerate(rows)]
        )
        results = await platform.read("scoring-results", total, within=120)
        assert await platform.read_available("scoring-results") == total
        members = await asyncio.to_thread(group_members, platform, group)
    finally:
        batch.stop()
    assert Counter(r.key for r in results) == Counter(f"w-{n}".encode() for n in range(total))
    assert sorted(partition for held in members.values() for partition in held) == [0, 1, 2], members


def group_members(platform: Platform, group: str) -> dict[str, list[int]]:
    """The consumer group's members (client host and member id) and the partitions each is assigned."""
    admin = AdminClient({"bootstrap.servers": platform.infrastructure.kafka_bootstrap})
    description = admin.describe_consumer_groups([group])[group].result(timeout=30)
    return {
        member.member_id: [partition.partition for partition in member.assignment.topic_partitions]
        for member in description.members
    }


async def test_replicas_joining_and_leaving_mid_stream_give_every_input_exactly_one_result(
    platform: Platform,
) -> None:
    """Each rebalance lands while batches are scored ahead of their commit, and records keep coming."""
    rows = ROWS.tolist()
    keys: list[bytes] = []
    stop_producing = asyncio.Event()

    async def keep_producing() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=platform.infrastructure.kafka_bootstrap, linger_ms=5)
        await producer.start()
        try:
            while not stop_producing.is_set():
                for _ in range(200):
                    key = f"r-{len(keys)}".encode()
                    await producer.send(
                        platform.topic("scoring-requests"),
                        value=orjson.dumps({"features": rows[len(keys) % len(rows)], "model": "credit"}),
                        key=key,
                    )
                    keys.append(key)
                await producer.flush()
                await asyncio.sleep(0.02)
        finally:
            await producer.stop()

    first = platform.batch(FLYWHEEL_BATCH_REPLICA_ID="replica-1").start()
    second = platform.batch(FLYWHEEL_BATCH_REPLICA_ID="replica-2")
    producing = asyncio.create_task(keep_producing())
    try:
        await asyncio.to_thread(first.wait_until_ready)
        await platform.read("scoring-results", 1000, within=120)
        await asyncio.to_thread(second.start().wait_until_ready)  # joins: the partitions are shared out
        await asyncio.sleep(3)
        await asyncio.to_thread(first.stop)  # leaves: its partitions move to the second
        await asyncio.sleep(3)
        stop_producing.set()
        await producing
        results = await platform.read("scoring-results", len(keys), within=180)
        assert await platform.read_available("scoring-results") == len(keys)
    finally:
        stop_producing.set()
        first.stop()
        second.stop()
    assert Counter(r.key for r in results) == Counter(keys)


async def test_a_promotion_mid_stream_takes_effect_between_batches(
    platform: Platform, running_batch: ServiceProcess
) -> None:
    wave = [(f"a-{n}".encode(), {"features": row, "model": "credit"}) for n, row in enumerate(ROWS.tolist())]
    await platform.produce(wave)
    await platform.read("scoring-results", len(wave))
    await platform.registry.put("/models/credit/aliases/production", json={"version": 2})
    produced = len(wave)
    for attempt in range(60):  # keep producing until the promotion has reached the worker
        batch = [
            (f"b{attempt}-{n}".encode(), {"features": row, "model": "credit"})
            for n, row in enumerate(ROWS.tolist())
        ]
        await platform.produce(batch)
        produced += len(batch)
        results = await platform.read("scoring-results", produced)
        if any(orjson.loads(r.value)["version"] == 2 for r in results):
            break
    else:
        pytest.fail("version 2 never scored after the promotion")
    by_partition: dict[int, list[tuple[int, int]]] = {}
    for result in results:
        value = orjson.loads(result.value)
        by_partition.setdefault(value["source"]["partition"], []).append(
            (value["source"]["offset"], value["version"])
        )
    for scored in by_partition.values():
        versions = [version for _, version in sorted(scored)]
        assert versions == sorted(versions), "a partition went back to version 1 after version 2"


async def test_a_deleted_alias_is_refused_from_a_later_batch_on(
    platform: Platform, running_batch: ServiceProcess
) -> None:
    wave = [(f"a-{n}".encode(), {"features": row, "model": "credit"}) for n, row in enumerate(ROWS.tolist())]
    await platform.produce(wave)
    await platform.read("scoring-results", len(wave))  # production -> v1, known to the worker from now on
    assert (await platform.registry.delete("/models/credit/aliases/production")).status_code == 204
    for attempt in range(30):  # keep producing until the deletion has reached the worker
        await platform.produce([(f"b-{attempt}".encode(), {"features": ROWS[0].tolist(), "model": "credit"})])
        try:
            letters = await platform.read("scoring-requests.dlq", 1, within=2)
        except AssertionError:
            continue  # scored by the version the worker knew: the deletion is not there yet
        break
    else:
        pytest.fail("records for the deleted alias were still scored")
    letter = CloudEvent.from_json(letters[0].value).payload_as(DeadLetter)
    assert "credit@production" in letter.error
