"""`python -m services.trainer`: serve the trainer service."""

from services.trainer.app import create_app
from services.trainer.settings import TrainerSettings
from shared.service import run_service
from shared.settings import FlywheelSettings

infrastructure = FlywheelSettings()
run_service("trainer", create_app(infrastructure), TrainerSettings(), infrastructure.log_level)
