"""`python -m services.monitor`: serve the monitor service."""

from services.monitor.app import create_app
from services.monitor.settings import MonitorSettings
from shared.service import run_service
from shared.settings import FlywheelSettings

infrastructure = FlywheelSettings()
run_service("monitor", create_app(infrastructure), MonitorSettings(), infrastructure.log_level)
