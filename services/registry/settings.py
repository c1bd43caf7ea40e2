"""Where the registry service listens (FLYWHEEL_REGISTRY_HOST, FLYWHEEL_REGISTRY_PORT)."""

from pydantic_settings import SettingsConfigDict

from shared.service import ServiceSettings


class RegistrySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_REGISTRY_", extra="ignore")

    port: int = 8081
