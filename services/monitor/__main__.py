"""`python -m services.monitor`: serve the monitor service."""

from services.monitor.app import create_app
from services.monitor.settings import MonitorSettings
from shared.service import run_service
from shared.settings import FlywheelSettings

infrastructure = FlywheelSettings()
monitor_settings = MonitorSettings()
run_service(
    "monitor", create_app(infrastructure, monitor_settings), monitor_settings, infrastructure.log_level
)
