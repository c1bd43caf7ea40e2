"""Flywheel's Python SDK and `flywheel` command line."""

from flywheel.client import RegistryClient
from flywheel.errors import (
    ConflictError,
    FlywheelError,
    InvalidRequestError,
    NotFoundError,
    ParityError,
    PayloadTooLargeError,
    ServiceUnavailableError,
)
from flywheel.tracking import LoggedModel, Run, start_run
from flywheel.trainer_client import TrainerClient

__all__ = [
    "ConflictError",
    "FlywheelError",
    "InvalidRequestError",
    "LoggedModel",
    "NotFoundError",
    "ParityError",
    "PayloadTooLargeError",
    "RegistryClient",
    "Run",
    "ServiceUnavailableError",
    "TrainerClient",
    "start_run",
]
