"""The `flywheel` command refuses to start without servers, and says how to get them."""

from __future__ import annotations

import pytest

from flywheel.cli import main


def test_up_without_servers_exits_2_naming_the_missing_settings_and_the_fix(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("FLYWHEEL_KAFKA_BOOTSTRAP", "FLYWHEEL_DATABASE_URL", "FLYWHEEL_S3_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert main(["up"]) == 2
    error = capsys.readouterr().err
    assert "FLYWHEEL_KAFKA_BOOTSTRAP, FLYWHEEL_DATABASE_URL, FLYWHEEL_S3_ENDPOINT not set" in error
    assert "deploy/local/infra.sh up" in error


def test_status_reports_services_that_do_not_answer(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLYWHEEL_SERVING_PORT", "1")  # nothing listens on port 1
    assert main(["status", "--services", "serving"]) == 1
    assert "serving   http://127.0.0.1:1" in capsys.readouterr().out
