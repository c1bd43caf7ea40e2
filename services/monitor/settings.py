"""The monitor service's own settings (FLYWHEEL_MONITOR_*)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.service import ServiceSettings


class MonitorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_MONITOR_", extra="ignore")

    port: int = 8084
    registry_url: str = Field(default="http://127.0.0.1:8081", description="where the registry answers")
    window_check_seconds: float = Field(
        default=5.0, gt=0, description="how often windows whose period has ended are closed"
    )
