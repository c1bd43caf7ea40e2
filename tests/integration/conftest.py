"""Fixtures on the real servers: isolated topics, a bucket, and a fresh database per test."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from fastapi import FastAPI

from services.registry.app import create_app as create_registry_app
from services.registry.settings import RegistrySettings
from shared.artifacts import S3ArtifactStore
from shared.bus import KafkaBus
from shared.events import CloudEvent
from shared.settings import FlywheelSettings
from tests.conftest import Infrastructure
from tests.models import tiny_classifier_onnx
from tests.monitor_data import profile_of, traffic
from tests.processes import Platform, ServiceProcess, start_platform
from tests.waiting import eventually

INTEGRATION_DIR = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in Path(item.fspath).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def unique_name() -> str:
    """A name no other test (or earlier run) uses, for topics, groups and keys."""
    return fresh_namespace()


KafkaBusFactory = Callable[..., Awaitable[KafkaBus]]


@pytest.fixture
async def kafka_bus_factory(infrastructure: Infrastructure) -> AsyncIterator[KafkaBusFactory]:
    """Start KafkaBus instances (stopped after the test); `topics` are created beside the platform's."""
    started: list[KafkaBus] = []

    async def start(*topics: str, **options: object) -> KafkaBus:
        bus = KafkaBus(
            infrastructure.kafka_bootstrap,
            client_id="flywheel-tests",
            extra_topics=topics,
            **options,  # type: ignore[arg-type]
        )
        await bus.start()
        started.append(bus)
        return bus

    yield start
    for bus in started:
        await bus.stop()
    for bus in started:  # the test's own topics, and with a namespace every topic in it
        for topic in bus.topics if not bus.prefix else []:
            if topic.startswith(TEST_TOPIC_PREFIX):
                await delete_topics(infrastructure.kafka_bootstrap, topic)
        if bus.prefix:
            await delete_topics(infrastructure.kafka_bootstrap, bus.prefix)


@pytest.fixture
async def s3_store(infrastructure: Infrastructure) -> S3ArtifactStore:
    store = S3ArtifactStore(
        infrastructure.s3_endpoint,
        access_key=infrastructure.s3_access_key,
        secret_key=infrastructure.s3_secret_key,
        bucket="flywheel-tests",
    )
    await store.start()
    return store


@contextlib.asynccontextmanager
async def fresh_database(infrastructure: Infrastructure) -> AsyncIterator[str]:
    """A database of its own on the real server, dropped afterwards; yields its URL."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(infrastructure.database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        base, _, _ = infrastructure.database_url.rpartition("/")
        yield f"{base}/{name}"
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def fresh_database_url(infrastructure: Infrastructure) -> AsyncIterator[str]:
    """A database created for this test alone."""
    async with fresh_database(infrastructure) as url:
        yield url


@pytest.fixture(scope="module")
async def module_database_url(infrastructure: Infrastructure) -> AsyncIterator[str]:
    """A database for one test module's services alone (they share it across its tests)."""
    async with fresh_database(infrastructure) as url:
        yield url


PlatformFactory = Callable[..., Awaitable[Platform]]


@pytest.fixture
async def platform_factory(
    infrastructure: Infrastructure, fresh_database_url: str, tmp_path: Path
) -> AsyncIterator[PlatformFactory]:
    """Start the five services as processes on the real servers, in the test's own database and a fresh
    Kafka namespace: `await platform_factory(servings=2, environment={...})`. Stopped after the test, and
    their topics deleted (`platform.log_tails()` shows what they logged)."""
    started: list[Platform] = []

    async def start(servings: int = 1, environment: dict[str, str] | None = None) -> Platform:
        namespace = fresh_namespace()
        joined = {**infrastructure.isolated_environment(fresh_database_url, namespace), **(environment or {})}
        log_dir = tmp_path / f"platform-{len(started) + 1}"
        log_dir.mkdir()
        platform = await asyncio.to_thread(start_platform, joined, log_dir, servings)
        platform.namespace = namespace
        started.append(platform)
        return platform

    try:
        yield start
    finally:
        for platform in started:
            platform.stop()
            await delete_topics(infrastructure.kafka_bootstrap, platform.namespace)


@dataclass
class RegistryUnderTest:
    """A registry app on the real servers, alone in its own database and Kafka namespace."""

    app: FastAPI
    client: httpx.AsyncClient
    settings: FlywheelSettings
    bus: KafkaBus  # the test's own bus in the same namespace: publishes to and observes the registry

    async def events(self, topic: str, within: float = 30.0, count: int = 1) -> list[CloudEvent]:
        """The first `count` events on `topic` in this namespace."""
        received: list[CloudEvent] = []

        async def collect(event: CloudEvent) -> None:
            received.append(event)

        subscription = await self.bus.subscribe(topic, f"observer-{uuid.uuid4().hex[:8]}", collect)
        try:
            await eventually(
                lambda: len(received) >= count, within=within, what=f"{count} event(s) on {topic}"
            )
        finally:
            await subscription.close()
        return received


@pytest.fixture
async def registry(
    infrastructure: Infrastructure,
    fresh_database_url: str,
    unique_name: str,
    kafka_bus_factory: KafkaBusFactory,
) -> AsyncIterator[RegistryUnderTest]:
    settings = infrastructure.settings(
        database_url=fresh_database_url, kafka_namespace=unique_name, s3_bucket="flywheel-tests"
    )
    app = create_registry_app(settings, RegistrySettings(max_upload_bytes=2 * 1024 * 1024))
    bus = await kafka_bus_factory(namespace=unique_name)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://registry") as client,
    ):
        yield RegistryUnderTest(app, client, settings, bus)


TEST_TOPIC_PREFIX = "test-"
# Each pytest session tags its names with its process id, so that sessions sharing a broker (several
# people, or an editor's test runner beside `make test`) clean up only their own and the dead's topics.
SESSION_PREFIX = f"{TEST_TOPIC_PREFIX}p{os.getpid()}-"
SESSION_TAG = re.compile(rf"^{TEST_TOPIC_PREFIX}p(\d+)-")


def fresh_namespace() -> str:
    """A Kafka namespace (and name for topics, groups and keys) no other test, run or session uses."""
    return f"{SESSION_PREFIX}{uuid.uuid4().hex[:12]}"


def _left_by_a_dead_session(topic: str) -> bool:
    """A test topic whose session is gone (or an untagged one, from before sessions were tagged)."""
    if not topic.startswith(TEST_TOPIC_PREFIX):
        return False
    tagged = SESSION_TAG.match(topic)
    if tagged is None:
        return True
    try:
        os.kill(int(tagged.group(1)), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


async def delete_topics(bootstrap: str, prefix: str | Callable[[str], bool]) -> int:
    """Delete every topic whose name starts with `prefix` (or that the predicate picks); how many there
    were. Each test namespace makes dozens of partitions, and a broker keeps files open for every one:
    tests clean up after themselves."""
    picks = prefix if callable(prefix) else lambda name: name.startswith(prefix)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        doomed = [name for name in await admin.list_topics() if picks(name)]
        for start in range(0, len(doomed), 500):
            await admin.delete_topics(doomed[start : start + 500])
        return len(doomed)
    finally:
        await admin.close()


@pytest.fixture(scope="session", autouse=True)
async def no_test_topics_left_behind(infrastructure: Infrastructure) -> AsyncIterator[None]:
    """Start from a broker without the topics of sessions that died before cleaning up, and leave none of
    this session's behind (other live sessions' topics are theirs to delete)."""
    await delete_topics(infrastructure.kafka_bootstrap, _left_by_a_dead_session)
    yield
    await delete_topics(infrastructure.kafka_bootstrap, SESSION_PREFIX)


@contextlib.asynccontextmanager
async def registry_with_profiled_model(
    infrastructure: Infrastructure,
    database_url: str,
    namespace: str,
    s3_store: S3ArtifactStore,
    log_dir: Path,
    *,
    versions: int = 1,
) -> AsyncIterator[ServiceProcess]:
    """A registry process holding `versions` versions of `credit`, each with the reference profile of
    `tests.monitor_data`'s training traffic: what a monitor compares live traffic with."""
    profile = await s3_store.put_bytes(
        f"{namespace}/reference_profile.json", orjson.dumps(profile_of(traffic(5000, seed=1)))
    )
    environment = infrastructure.isolated_environment(database_url, namespace)
    registry = ServiceProcess("registry", environment, log_dir / "registry.log").start()
    try:
        registry.wait_until_ready()
        async with httpx.AsyncClient(base_url=registry.url) as client:
            for _ in range(versions):
                uploaded = await client.post(
                    "/models/credit/versions",
                    files={"model": tiny_classifier_onnx()},
                    data={"reference_profile_uri": profile.uri},
                )
                assert uploaded.status_code == 201, uploaded.text
        yield registry
    finally:
        registry.stop()
