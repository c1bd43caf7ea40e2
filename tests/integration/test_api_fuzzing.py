"""Every service's REST API fuzzed with schemathesis against its own OpenAPI document, on the real servers.

Each operation gets a bounded, deterministic run (`EXAMPLES_PER_OPERATION` generated requests, valid and
invalid, plus the documented examples), so the fuzzing adds about a minute and a half to the suite. Every
answer must be no 5xx, a status code the operation documents, and a body its schema allows. Serving's hot
inference routes are fuzzed through their hand-written OpenAPI; uploads (multipart and octet-stream bodies)
too. Access control is off here (tests/conftest.py): the fuzzing is about input handling.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from services.batch.app import create_app as create_batch_app
from services.monitor.app import create_app as create_monitor_app
from services.registry.app import create_app as create_registry_app
from services.serving.app import create_app as create_serving_app
from services.trainer.app import create_app as create_trainer_app
from shared.settings import FlywheelSettings
from tests.conftest import Infrastructure
from tests.integration.conftest import delete_topics, fresh_namespace
from tests.processes import Platform, start_platform

EXAMPLES_PER_OPERATION = 25
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]


def _schema(app_factory: Callable[[FlywheelSettings], FastAPI]) -> schemathesis.BaseSchema:
    """The service's OpenAPI document as its app builds it (no server needed to read it), with a bounded,
    deterministic run per operation: valid and invalid requests, the documented examples, no shrinking."""
    app = app_factory(FlywheelSettings())
    schema = schemathesis.openapi.from_dict(app.openapi())
    schema.config.generation.update(
        modes=list(GenerationMode), max_examples=EXAMPLES_PER_OPERATION, deterministic=True, no_shrink=True
    )
    schema.config.phases.update(phases=["examples", "fuzzing"])
    # Left out: server-sent events (an answer that streams for up to 15 s, no body to check).
    return schema.exclude(path="/alerts/stream")


registry_schema = _schema(create_registry_app)
trainer_schema = _schema(create_trainer_app)
serving_schema = _schema(create_serving_app)
batch_schema = _schema(create_batch_app)
monitor_schema = _schema(create_monitor_app)


@pytest.fixture(scope="module")
async def platform(
    infrastructure: Infrastructure, module_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Platform]:
    """The five services as processes on the real servers, in a database and Kafka namespace of their own."""
    namespace = fresh_namespace()
    environment = infrastructure.isolated_environment(module_database_url, namespace)
    started = await asyncio.to_thread(start_platform, environment, tmp_path_factory.mktemp("fuzzed"))
    try:
        yield started
    finally:
        started.stop()
        await delete_topics(infrastructure.kafka_bootstrap, namespace)


@registry_schema.parametrize()
def test_registry_api(case: Case[Any], platform: Platform) -> None:
    case.call_and_validate(base_url=platform.registry.url, checks=CHECKS)


@trainer_schema.parametrize()
def test_trainer_api(case: Case[Any], platform: Platform) -> None:
    case.call_and_validate(base_url=platform.trainer.url, checks=CHECKS)


@serving_schema.parametrize()
def test_serving_api(case: Case[Any], platform: Platform) -> None:
    case.call_and_validate(base_url=platform.servings[0].url, checks=CHECKS)


@batch_schema.parametrize()
def test_batch_api(case: Case[Any], platform: Platform) -> None:
    case.call_and_validate(base_url=platform.batch.url, checks=CHECKS)


@monitor_schema.parametrize()
def test_monitor_api(case: Case[Any], platform: Platform) -> None:
    case.call_and_validate(base_url=platform.monitor.url, checks=CHECKS)
