"""Static checks of docker-compose.yml: no Docker engine runs on our machines, so the file is checked
against the code it deploys (service packages, settings fields, default ports, the Dockerfile) and,
where the `docker-compose` command is installed, by `docker-compose config`, which needs no engine."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from shared.settings import FlywheelSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"

SERVERS = ("kafka", "minio", "postgres")
FLYWHEEL_SERVICES = ("serving", "registry", "trainer", "batch", "monitor")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    with COMPOSE_FILE.open(encoding="utf-8") as file:
        document = yaml.safe_load(file)
    assert isinstance(document, dict), f"{COMPOSE_FILE} is not a YAML mapping"
    return document


def _service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    service = compose["services"][name]
    assert isinstance(service, dict), f"service {name!r} is not a mapping"
    return service


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict, whether written as a mapping or as a list of NAME=value."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        return dict(entry.split("=", 1) if "=" in entry else (entry, "") for entry in environment)
    return {name: "" if value is None else str(value) for name, value in environment.items()}


def _service_settings_class(name: str) -> type[BaseSettings]:
    """`services.<name>.settings.<Name>Settings`, where the service reads FLYWHEEL_<NAME>_HOST/_PORT."""
    module = importlib.import_module(f"services.{name}.settings")
    settings_class: type[BaseSettings] = getattr(module, f"{name.capitalize()}Settings")
    assert issubclass(settings_class, BaseSettings)
    return settings_class


def _env_names(settings_class: type[BaseSettings]) -> set[str]:
    """The environment variable names a settings class reads (its prefix plus each field name)."""
    prefix = settings_class.model_config.get("env_prefix", "")
    return {f"{prefix}{field}".upper() for field in settings_class.model_fields}


def _port_mappings(service: dict[str, Any]) -> list[tuple[int, int]]:
    """(published, target) pairs from short ("[ip:]8080:8080") or long ({published, target}) syntax."""
    mappings = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            mappings.append((int(entry["published"]), int(entry["target"])))
        else:
            *_, published, target = str(entry).split(":")
            mappings.append((int(published), int(target.split("/")[0])))
    return mappings


def test_compose_file_omits_the_obsolete_version_key(compose: dict[str, Any]) -> None:
    assert "version" not in compose


def test_compose_defines_the_three_servers_and_the_five_flywheel_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {*SERVERS, *FLYWHEEL_SERVICES}


@pytest.mark.parametrize("server", SERVERS)
def test_each_server_has_a_healthcheck_for_the_services_to_wait_on(
    compose: dict[str, Any], server: str
) -> None:
    healthcheck = _service(compose, server).get("healthcheck") or {}
    assert healthcheck.get("test"), f"{server} has no healthcheck, so `service_healthy` would never hold"
    assert not healthcheck.get("disable", False)


@pytest.mark.parametrize("name", FLYWHEEL_SERVICES)
def test_each_flywheel_service_runs_its_own_existing_package(compose: dict[str, Any], name: str) -> None:
    assert _service(compose, name)["command"] == ["python", "-m", f"services.{name}"]
    assert (REPO_ROOT / "services" / name / "__main__.py").is_file()


@pytest.mark.parametrize("name", FLYWHEEL_SERVICES)
def test_each_flywheel_service_waits_for_healthy_kafka_minio_and_postgres(
    compose: dict[str, Any], name: str
) -> None:
    depends_on = _service(compose, name).get("depends_on")
    assert isinstance(depends_on, dict), f"{name}: depends_on must be a mapping with conditions"
    for server in SERVERS:
        assert depends_on.get(server) == {"condition": "service_healthy"}, f"{name} -> {server}"


@pytest.mark.parametrize("name", [*SERVERS, *FLYWHEEL_SERVICES])
def test_every_flywheel_variable_in_the_environment_is_one_the_code_reads(
    compose: dict[str, Any], name: str
) -> None:
    known = _env_names(FlywheelSettings)
    if name in FLYWHEEL_SERVICES:
        known |= _env_names(_service_settings_class(name))
    used = {
        variable for variable in _environment(_service(compose, name)) if variable.startswith("FLYWHEEL_")
    }
    assert used <= known, f"{name} sets variables no code reads: {sorted(used - known)}"


@pytest.mark.parametrize("name", FLYWHEEL_SERVICES)
def test_each_flywheel_service_reaches_every_server_and_listens_on_all_interfaces(
    compose: dict[str, Any], name: str
) -> None:
    environment = _environment(_service(compose, name))
    for variable in ("FLYWHEEL_KAFKA_BOOTSTRAP", "FLYWHEEL_DATABASE_URL", "FLYWHEEL_S3_ENDPOINT"):
        assert environment.get(variable), f"{name}: {variable} unset, the embedded stand-in would be used"
    assert environment.get(f"FLYWHEEL_{name.upper()}_HOST") == "0.0.0.0"


def test_every_build_points_at_a_dockerfile_that_exists(compose: dict[str, Any]) -> None:
    for name in FLYWHEEL_SERVICES:
        assert "build" in _service(compose, name), f"{name} has no build"
    for name, service in compose["services"].items():
        build = service.get("build")
        if build is None:
            continue
        if isinstance(build, str):
            build = {"context": build}
        context = (REPO_ROOT / build.get("context", ".")).resolve()
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), f"{name}: {dockerfile} does not exist"


@pytest.mark.parametrize("name", FLYWHEEL_SERVICES)
def test_published_port_and_healthcheck_use_the_services_default_port(
    compose: dict[str, Any], name: str
) -> None:
    default_port = _service_settings_class(name).model_fields["port"].default
    assert isinstance(default_port, int)
    service = _service(compose, name)
    port_variable = f"FLYWHEEL_{name.upper()}_PORT"
    assert _environment(service).get(port_variable, str(default_port)) == str(default_port)
    assert _port_mappings(service) == [(default_port, default_port)]
    healthcheck = " ".join(service["healthcheck"]["test"])
    assert f"http://127.0.0.1:{default_port}/health/ready" in healthcheck


def test_docker_compose_v1_accepts_the_file() -> None:
    executable = shutil.which("docker-compose")
    if executable is None:
        reason = "`docker-compose` is not on PATH (Debian: apt-get install docker-compose)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must run this check, not skip it")
        pytest.skip(reason)
    result = subprocess.run(
        [executable, "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr or result.stdout
