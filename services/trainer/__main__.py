"""`python -m services.trainer`: serve the trainer service."""

from services.trainer.app import create_app
from services.trainer.settings import TrainerSettings
from shared.service import run_service
from shared.settings import FlywheelSettings

infrastructure = FlywheelSettings()
trainer_settings = TrainerSettings()
run_service(
    "trainer", create_app(infrastructure, trainer_settings), trainer_settings, infrastructure.log_level
)
