"""The registry service's own settings (FLYWHEEL_REGISTRY_*)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.service import ServiceSettings


class RegistrySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_REGISTRY_", extra="ignore")

    port: int = 8081
    max_upload_bytes: int = Field(default=512 * 1024 * 1024, ge=1, description="largest model upload")
