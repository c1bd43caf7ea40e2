"""`flywheel up` and `status`: what they refuse, and what they say."""

from __future__ import annotations

import pytest

from flywheel.cli import main


def test_up_with_some_servers_exits_2_naming_the_missing_settings_and_the_fix(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLYWHEEL_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    for name in ("FLYWHEEL_DATABASE_URL", "FLYWHEEL_S3_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert main(["up"]) == 2
    error = capsys.readouterr().err
    assert "FLYWHEEL_DATABASE_URL, FLYWHEEL_S3_ENDPOINT not set" in error
    assert "deploy/local/infra.sh up" in error
    assert "or none for the embedded mode" in error


def test_the_embedded_mode_runs_all_five_services(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("FLYWHEEL_KAFKA_BOOTSTRAP", "FLYWHEEL_DATABASE_URL", "FLYWHEEL_S3_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert main(["up", "--services", "registry"]) == 2
    assert "the embedded mode runs all five services" in capsys.readouterr().err


def test_status_reports_services_that_do_not_answer(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLYWHEEL_SERVING_PORT", "1")  # nothing listens on port 1
    assert main(["status", "--services", "serving"]) == 1
    assert "serving   http://127.0.0.1:1" in capsys.readouterr().out
