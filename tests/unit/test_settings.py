"""Settings come from FLYWHEEL_-prefixed environment variables; unset servers mean embedded stand-ins."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.registry.settings import RegistrySettings
from services.serving.settings import ServingSettings
from shared.artifacts import FilesystemArtifactStore, S3ArtifactStore, create_artifact_store
from shared.bus import InMemoryBus, KafkaBus, create_bus
from shared.settings import FlywheelSettings


def test_servers_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_KAFKA_BOOTSTRAP", "kafka:9092")
    monkeypatch.setenv("FLYWHEEL_S3_ENDPOINT", "http://minio:9000")
    monkeypatch.setenv("FLYWHEEL_S3_SECRET_KEY", "hunter2")
    settings = FlywheelSettings()
    assert settings.kafka_bootstrap == "kafka:9092"
    assert isinstance(create_bus(settings, client_id="t"), KafkaBus)
    assert isinstance(create_artifact_store(settings), S3ArtifactStore)
    assert "hunter2" not in repr(settings)


def test_without_servers_the_embedded_stand_ins_are_used(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("FLYWHEEL_KAFKA_BOOTSTRAP", "FLYWHEEL_S3_ENDPOINT", "FLYWHEEL_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = FlywheelSettings(data_dir=tmp_path)
    assert isinstance(create_bus(settings, client_id="t"), InMemoryBus)
    store = create_artifact_store(settings)
    assert isinstance(store, FilesystemArtifactStore)
    assert store.root == tmp_path / "artifacts"


def test_each_service_has_its_own_port_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_REGISTRY_PORT", "9999")
    assert RegistrySettings().port == 9999
    assert ServingSettings().port == 8080
