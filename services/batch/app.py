"""The batch service's HTTP app: its lifespan opens the bus, the artifact store and the database."""

from pathlib import Path

from fastapi import FastAPI

import services.batch
from shared.service import create_service_app
from shared.settings import FlywheelSettings

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: FlywheelSettings | None = None) -> FastAPI:
    return create_service_app(
        "batch",
        description=services.batch.__doc__ or "",
        settings=settings or FlywheelSettings(),
        migrations=MIGRATIONS,
    )
