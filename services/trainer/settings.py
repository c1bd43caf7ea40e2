"""The trainer service's own settings (FLYWHEEL_TRAINER_*)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.service import ServiceSettings


class TrainerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_TRAINER_", extra="ignore")

    port: int = 8082
    registry_url: str = Field(
        default="http://127.0.0.1:8081", description="where the registry service answers"
    )
    max_concurrent_jobs: int = Field(default=1, ge=1, description="jobs one replica trains at once")
    heartbeat_seconds: float = Field(
        default=5.0, gt=0, description="how often a running job says it is alive"
    )
    stale_job_seconds: float = Field(
        default=120.0,
        gt=0,
        description="a running job silent this long is taken to have died with its replica",
    )
    max_job_attempts: int = Field(default=2, ge=1, description="starts of one job before a crash fails it")
    schedule_poll_seconds: float = Field(default=30.0, gt=0, description="how often due schedules are fired")
    max_dataset_bytes: int = Field(default=1024 * 1024 * 1024, ge=1, description="largest dataset upload")
