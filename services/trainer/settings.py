"""Where the trainer service listens (FLYWHEEL_TRAINER_HOST, FLYWHEEL_TRAINER_PORT)."""

from pydantic_settings import SettingsConfigDict

from shared.service import ServiceSettings


class TrainerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_TRAINER_", extra="ignore")

    port: int = 8082
