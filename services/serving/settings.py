"""Where the serving service listens (FLYWHEEL_SERVING_HOST, FLYWHEEL_SERVING_PORT)."""

from pydantic_settings import SettingsConfigDict

from shared.service import ServiceSettings


class ServingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_SERVING_", extra="ignore")

    port: int = 8080
