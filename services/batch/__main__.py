"""`python -m services.batch`: serve the batch service with FLYWHEEL_BATCH_WORKERS processes."""

from services.batch.settings import BatchSettings
from shared.service import run_service
from shared.settings import FlywheelSettings

infrastructure = FlywheelSettings()
batch_settings = BatchSettings()
# Each worker builds the app from the environment, as this process read it.
run_service(
    "batch",
    "services.batch.app:create_app",
    batch_settings,
    infrastructure.log_level,
    workers=batch_settings.workers,
)
