"""`python -m services.registry`: serve the registry service."""

from services.registry.app import create_app
from services.registry.settings import RegistrySettings
from shared.service import run_service
from shared.settings import FlywheelSettings

infrastructure = FlywheelSettings()
registry_settings = RegistrySettings()
run_service(
    "registry", create_app(infrastructure, registry_settings), registry_settings, infrastructure.log_level
)
