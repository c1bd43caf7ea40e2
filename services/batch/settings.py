"""Where the batch service listens (FLYWHEEL_BATCH_HOST, FLYWHEEL_BATCH_PORT)."""

from pydantic_settings import SettingsConfigDict

from shared.service import ServiceSettings


class BatchSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_BATCH_", extra="ignore")

    port: int = 8083
