"""`python -m services.batch`: serve the batch service."""

from services.batch.app import create_app
from services.batch.settings import BatchSettings
from shared.service import run_service
from shared.settings import FlywheelSettings

infrastructure = FlywheelSettings()
run_service("batch", create_app(infrastructure), BatchSettings(), infrastructure.log_level)
