"""The serving service's HTTP app: its lifespan opens the bus and the artifact store."""

from fastapi import FastAPI

import services.serving
from shared.service import create_service_app
from shared.settings import FlywheelSettings


def create_app(settings: FlywheelSettings | None = None) -> FastAPI:
    return create_service_app(
        "serving",
        description=services.serving.__doc__ or "",
        settings=settings or FlywheelSettings(),
    )
