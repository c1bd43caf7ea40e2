"""`python -m services.batch`: serve the batch service."""

from services.batch.app import create_app
from services.batch.settings import BatchSettings
from shared.service import run_service
from shared.settings import FlywheelSettings

infrastructure = FlywheelSettings()
batch_settings = BatchSettings()
run_service("batch", create_app(infrastructure, batch_settings), batch_settings, infrastructure.log_level)
