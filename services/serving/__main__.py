"""`python -m services.serving`: serve the serving service."""

from services.serving.app import create_app
from services.serving.settings import ServingSettings
from shared.service import run_service
from shared.settings import FlywheelSettings

infrastructure = FlywheelSettings()
serving_settings = ServingSettings()
run_service(
    "serving", create_app(infrastructure, serving_settings), serving_settings, infrastructure.log_level
)
