"""Secrets (URL passwords, bearer tokens, S3 keys, service tokens) never reach a log line or an error."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.serving.app import create_app as create_serving_app
from services.serving.settings import ServingSettings
from shared.service import create_service_app
from shared.settings import FlywheelSettings
from shared.telemetry import JsonFormatter

DATABASE_PASSWORD = "db-Pa55word-never-shown"
S3_SECRET = "s3-secret-never-shown"
SERVICE_TOKEN = "fwt_service-token-never-shown"
REGISTRY_PASSWORD = "registry-Pa55-never-shown"


def formatted(record: logging.LogRecord) -> str:
    return JsonFormatter("test").format(record)


def test_a_database_url_s_password_and_a_bearer_token_never_reach_the_log() -> None:
    url = f"postgresql://flywheel:{DATABASE_PASSWORD}@db.internal:5432/flywheel"
    try:
        raise ConnectionError(f"cannot connect to {url}")
    except ConnectionError:
        record = logging.LogRecord(
            "db", logging.ERROR, __file__, 1, "start failed: %s", (url,), sys.exc_info()
        )
    record.authorization = f"Bearer {SERVICE_TOKEN}"
    line = formatted(record)
    assert DATABASE_PASSWORD not in line
    assert SERVICE_TOKEN not in line
    entry = json.loads(line)
    assert entry["message"] == "start failed: postgresql://flywheel:***@db.internal:5432/flywheel"
    assert "cannot connect to postgresql://flywheel:***@db.internal" in entry["exception"]
    assert entry["authorization"] == "Bearer ***"


def test_the_configured_secrets_are_redacted_wherever_they_appear() -> None:
    settings = FlywheelSettings(s3_secret_key=S3_SECRET, service_token=SERVICE_TOKEN)
    create_service_app("test", description="", settings=settings)
    record = logging.LogRecord(
        "s3", logging.WARNING, __file__, 1, f"signature mismatch for {S3_SECRET}", None, None
    )
    record.token = SERVICE_TOKEN
    line = formatted(record)
    assert S3_SECRET not in line
    assert SERVICE_TOKEN not in line


def test_settings_never_show_their_secrets_or_the_database_password() -> None:
    settings = FlywheelSettings(
        database_url=f"postgresql://flywheel:{DATABASE_PASSWORD}@db:5432/flywheel",
        s3_secret_key=S3_SECRET,
        service_token=SERVICE_TOKEN,
    )
    for shown in (repr(settings), str(settings)):
        assert DATABASE_PASSWORD not in shown
        assert S3_SECRET not in shown
        assert SERVICE_TOKEN not in shown


def test_an_error_answer_naming_a_url_with_a_password_hides_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = FlywheelSettings(data_dir=tmp_path, kafka_bootstrap=None, s3_endpoint=None, database_url=None)
    serving = ServingSettings(registry_url=f"http://serving:{REGISTRY_PASSWORD}@127.0.0.1:9")
    with caplog.at_level(logging.INFO), TestClient(create_serving_app(settings, serving)) as client:
        metadata = client.get("/v2/models/credit")
        inference = client.post("/v2/models/credit/infer", json={"inputs": []})
    for answer in (metadata, inference):
        assert answer.status_code == 503
        assert "did not answer" in answer.text
        assert REGISTRY_PASSWORD not in answer.text
    assert all(REGISTRY_PASSWORD not in formatted(record) for record in caplog.records)
