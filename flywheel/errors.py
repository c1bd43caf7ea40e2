"""The SDK's exceptions: one type per failure a caller can act on, each carrying the server's message."""

from __future__ import annotations


class FlywheelError(Exception):
    """Something Flywheel refused or could not do; `detail` says what, `status_code` is the HTTP status
    when a service answered (None when it did not, or when the SDK itself refused)."""

    def __init__(self, detail: str, status_code: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status_code = status_code


class NotFoundError(FlywheelError):
    """404: the experiment, run, model, version, alias or training job does not exist."""


class ConflictError(FlywheelError):
    """409: the change contradicts what is stored, e.g. a param re-logged with another value, or a retrain
    of a model with no production version made by the trainer."""


class InvalidRequestError(FlywheelError):
    """400 or 422: the request itself is wrong. For a malformed search filter, `position` and `token`
    point at the mistake."""

    def __init__(
        self, detail: str, status_code: int, position: int | None = None, token: str | None = None
    ) -> None:
        super().__init__(detail, status_code)
        self.position = position
        self.token = token


class AccessDeniedError(FlywheelError):
    """401 or 403: no valid token was sent (FLYWHEEL_TOKEN), or its role lacks the permission the route
    needs."""


class PayloadTooLargeError(FlywheelError):
    """413: the upload is larger than the service accepts (FLYWHEEL_REGISTRY_MAX_UPLOAD_BYTES for models,
    FLYWHEEL_TRAINER_MAX_DATASET_BYTES for datasets)."""


class ServiceUnavailableError(FlywheelError):
    """The registry or the trainer did not answer at all: not started, wrong URL, or too slow."""


class ParityError(FlywheelError):
    """The ONNX conversion does not predict what the estimator predicts, within the tolerance."""
