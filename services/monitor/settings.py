"""Where the monitor service listens (FLYWHEEL_MONITOR_HOST, FLYWHEEL_MONITOR_PORT)."""

from pydantic_settings import SettingsConfigDict

from shared.service import ServiceSettings


class MonitorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_MONITOR_", extra="ignore")

    port: int = 8084
