"""Infrastructure settings every service reads from `FLYWHEEL_`-prefixed environment variables."""

from __future__ import annotations

from pathlib import Path

from platformdirs import user_data_path
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class FlywheelSettings(BaseSettings):
    """Where the platform's servers are. An unset server means the embedded stand-in is used:
    no `kafka_bootstrap` -> in-memory bus, no `s3_endpoint` -> artifacts on the local filesystem."""

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_", extra="ignore")

    kafka_bootstrap: str | None = Field(default=None, description="host:port[,host:port...] of Kafka brokers")
    kafka_namespace: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="prefix of every topic and consumer group, for deployments sharing a cluster",
    )
    kafka_topic_partitions: int = Field(default=3, ge=1)
    kafka_replication_factor: int = Field(default=1, ge=1)
    bus_max_attempts: int = Field(default=5, ge=1, description="handler tries before a message goes to .dlq")
    bus_retry_backoff_seconds: float = Field(default=0.2, gt=0, description="first retry delay; doubles")

    # Left out of the settings' repr: the URL holds the password.
    database_url: str | None = Field(
        default=None, repr=False, description="postgresql://user:password@host:port/db"
    )
    database_pool_min: int = Field(default=1, ge=0)
    database_pool_max: int = Field(default=10, ge=1)

    s3_endpoint: str | None = Field(default=None, description="http(s)://host:port of an S3 server")
    s3_access_key: SecretStr = SecretStr("")
    s3_secret_key: SecretStr = SecretStr("")
    s3_region: str = "us-east-1"
    s3_bucket: str = "flywheel"

    data_dir: Path = Field(
        default_factory=lambda: user_data_path("flywheel"),
        description="embedded mode: where the embedded PostgreSQL's data and filesystem artifacts live",
    )
    log_level: str = "INFO"
    max_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1,
        description="largest request body a route takes, uploads aside (413 beyond)",
    )

    auth_enabled: bool = Field(default=True, description="whether routes need a bearer token (shared.auth)")
    auth_cache_seconds: float = Field(
        default=5.0, ge=0, description="how long a token check's answer is reused: a revocation's delay"
    )
    service_token: SecretStr = Field(
        default=SecretStr(""), description="the token services send when they call the registry"
    )
    admin_token: SecretStr = Field(
        default=SecretStr(""), description="the registry's first admin token, taken at first start"
    )
    metrics_public: bool = Field(default=True, description="whether /metrics answers without a token")

    def configured_servers(self) -> dict[str, bool]:
        """Whether each of the three servers is configured, by the variable that names it: all three means
        a deployment on servers, none the embedded mode (`flywheel up`)."""
        return {
            "FLYWHEEL_KAFKA_BOOTSTRAP": bool(self.kafka_bootstrap),
            "FLYWHEEL_DATABASE_URL": bool(self.database_url),
            "FLYWHEEL_S3_ENDPOINT": bool(self.s3_endpoint),
        }
