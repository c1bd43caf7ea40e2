"""`python -m services.registry`: serve the registry service."""

from services.registry.app import create_app
from services.registry.settings import RegistrySettings
from shared.service import run_service
from shared.settings import FlywheelSettings

infrastructure = FlywheelSettings()
run_service("registry", create_app(infrastructure), RegistrySettings(), infrastructure.log_level)
