"""Where the real servers are, for integration tests.

In order: endpoints given in FLYWHEEL_* environment variables (what `deploy/local/infra.sh env`
prints, and what `make test` exports); else containers started by testcontainers when a Docker engine
answers; else the test fails with the command that starts the servers. Never a silent skip.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from shared.settings import FlywheelSettings

# The tests written before access control call every route without a token: they run with it off, in
# this process and in the service processes they start (which inherit this environment). Tests of access
# control turn it on explicitly (tests/integration/test_access_control.py).
os.environ["FLYWHEEL_AUTH_ENABLED"] = "false"

START_SERVERS_HINT = (
    "start them with `bash deploy/local/infra.sh up` and export what `bash deploy/local/infra.sh env` "
    "prints (or run the whole suite with `make test`)"
)


@dataclass(frozen=True)
class Infrastructure:
    kafka_bootstrap: str
    database_url: str
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: str

    def settings(self, **overrides: object) -> FlywheelSettings:
        """Settings pointing every service at these servers."""
        fields: dict[str, object] = {
            "kafka_bootstrap": self.kafka_bootstrap,
            "database_url": self.database_url,
            "s3_endpoint": self.s3_endpoint,
            "s3_access_key": self.s3_access_key,
            "s3_secret_key": self.s3_secret_key,
        }
        return FlywheelSettings.model_validate({**fields, **overrides})

    def environment(self) -> dict[str, str]:
        """The same endpoints as environment variables, for services started as processes."""
        return {
            "FLYWHEEL_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "FLYWHEEL_DATABASE_URL": self.database_url,
            "FLYWHEEL_S3_ENDPOINT": self.s3_endpoint,
            "FLYWHEEL_S3_ACCESS_KEY": self.s3_access_key,
            "FLYWHEEL_S3_SECRET_KEY": self.s3_secret_key,
        }

    def isolated_environment(self, database_url: str, namespace: str) -> dict[str, str]:
        """The environment of a service process that shares these servers with other tests but nothing
        else: its own database, its own Kafka namespace, and the tests' bucket."""
        return {
            **self.environment(),
            "FLYWHEEL_DATABASE_URL": database_url,
            "FLYWHEEL_KAFKA_NAMESPACE": namespace,
            "FLYWHEEL_S3_BUCKET": "flywheel-tests",
        }


def _from_environment() -> Infrastructure | None:
    names = {
        "kafka_bootstrap": "FLYWHEEL_KAFKA_BOOTSTRAP",
        "database_url": "FLYWHEEL_DATABASE_URL",
        "s3_endpoint": "FLYWHEEL_S3_ENDPOINT",
        "s3_access_key": "FLYWHEEL_S3_ACCESS_KEY",
        "s3_secret_key": "FLYWHEEL_S3_SECRET_KEY",
    }
    values = {field: os.environ.get(variable) for field, variable in names.items()}
    if not any(values.values()):
        return None
    missing = [names[field] for field, value in values.items() if not value]
    if missing:
        pytest.fail(f"some server endpoints are set but not {', '.join(missing)}; {START_SERVERS_HINT}")
    return Infrastructure(**values)  # type: ignore[arg-type]


def _docker_engine_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env(timeout=3).ping()
    except Exception:
        return False
    return True


@contextlib.contextmanager
def _from_testcontainers() -> Iterator[Infrastructure]:
    from testcontainers.kafka import KafkaContainer
    from testcontainers.minio import MinioContainer
    from testcontainers.postgres import PostgresContainer

    with (
        KafkaContainer("apache/kafka:4.1.2").with_kraft() as kafka,
        PostgresContainer(
            "postgres:15", username="flywheel", password="flywheel", dbname="flywheel"
        ) as postgres,
        MinioContainer(access_key="flywheel", secret_key="flywheel-secret") as minio,
    ):
        minio_config = minio.get_config()
        yield Infrastructure(
            kafka_bootstrap=kafka.get_bootstrap_server(),
            database_url=postgres.get_connection_url(driver=None),
            s3_endpoint=f"http://{minio_config['endpoint']}",
            s3_access_key=minio_config["access_key"],
            s3_secret_key=minio_config["secret_key"],
        )


@pytest.fixture(scope="session")
def infrastructure() -> Iterator[Infrastructure]:
    """Real Kafka, MinIO and PostgreSQL endpoints, or a failure that says how to get them."""
    configured = _from_environment()
    if configured is not None:
        yield configured
    elif _docker_engine_answers():
        with _from_testcontainers() as started:
            yield started
    else:
        pytest.fail(
            f"no Kafka, MinIO and PostgreSQL servers are configured and no Docker engine answers; "
            f"{START_SERVERS_HINT}"
        )


_skipped_in_ci: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and os.environ.get("CI") == "true":
        _skipped_in_ci.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI a skipped test is a failure: a missing server or tool must never pass unnoticed."""
    if _skipped_in_ci and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _skipped_in_ci:
        terminalreporter.write_line(
            f"CI=true: {len(_skipped_in_ci)} skipped test(s) count as failures: {', '.join(_skipped_in_ci)}",
            red=True,
        )
