"""`python -m services.serving`: serve the serving service with FLYWHEEL_SERVING_WORKERS processes."""

from services.serving.settings import ServingSettings
from shared.service import run_service
from shared.settings import FlywheelSettings

infrastructure = FlywheelSettings()
serving_settings = ServingSettings()
# Each worker builds the app from the environment, as this process read it.
run_service(
    "serving",
    "services.serving.app:create_app",
    serving_settings,
    infrastructure.log_level,
    workers=serving_settings.workers,
)
