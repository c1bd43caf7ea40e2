"""What every Flywheel service client shares: one pooled HTTP connection, JSON bodies, and the mapping of
error answers to the exceptions in `flywheel.errors`."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Self
from urllib.parse import quote

import httpx

from flywheel.errors import (
    AccessDeniedError,
    ConflictError,
    FlywheelError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    ServiceUnavailableError,
)
from shared.auth import ADMIN_TOKEN_FILE, authorization_headers
from shared.settings import FlywheelSettings

Json = dict[str, Any]
TOKEN_VARIABLE = "FLYWHEEL_TOKEN"

DEFAULT_TIMEOUT_SECONDS = 30.0
READINESS_TIMEOUT_SECONDS = 3.0


def readiness(url: str) -> tuple[bool, str]:
    """(ready, what to show a person) for the service at `url`: its `/health/ready` answer, naming the
    dependencies it reports down, or why there is no answer."""
    try:
        response = httpx.get(f"{url}/health/ready", timeout=READINESS_TIMEOUT_SECONDS)
    except httpx.TransportError:
        return False, "not answering"
    if response.status_code == 200:
        return True, "ready"
    try:
        body = response.json()
    except ValueError:
        body = None
    checks = body.get("checks", {}) if isinstance(body, dict) else {}
    failing = [check for check, ok in checks.items() if not ok]
    return False, f"not ready: {', '.join(failing)} down" if failing else f"answered {response.status_code}"


@dataclass(frozen=True)
class ServiceAddress:
    """Where the SDK and the CLI find a service: the URL given (`--<service>-url`), else the environment
    variable, else the service's local default."""

    name: str  # as errors and help call it: "registry", "batch service"
    option: str  # the CLI's: "--registry-url"
    variable: str  # "FLYWHEEL_REGISTRY_URL"
    default: str  # "http://127.0.0.1:8081"

    def url(self, given: str | None = None) -> str:
        return (given or os.environ.get(self.variable) or self.default).rstrip("/")

    def add_option(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            self.option, help=f"the {self.name} (default: ${self.variable}, else {self.default})"
        )


class ServiceClient:
    """One Flywheel service over HTTP. Use as a context manager, or call `close()`, to release the
    connections. Subclasses say where their service is configured, for error messages."""

    address: ClassVar[ServiceAddress]

    def __init__(
        self,
        base_url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = self.address.url(base_url)  # None: the environment's, else the local default
        headers = {**authorization_headers(client_token()), **(headers or {})}
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, headers=headers)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled connections."""
        self._http.close()

    def _get(self, path: str, params: Mapping[str, Any] | None = None) -> Json:
        return self._send("GET", path, params=params)

    def _send(self, method: str, path: str, **options: Any) -> Json:
        body: Json = self._request(method, path, **options).json()
        return body

    def _request(self, method: str, path: str, **options: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **options)
        except httpx.TransportError as error:
            reason = str(error) or type(error).__name__
            raise ServiceUnavailableError(
                f"the {self.address.name} at {self.base_url} did not answer ({reason}); start Flywheel with "
                f"`flywheel up`, or point {self.address.variable} (or {self.address.option}) at a running "
                f"{self.address.name}"
            ) from error
        if response.is_error:
            raise error_from_response(response, self.address.name)
        return response


def client_token() -> str | None:
    """The token clients send: FLYWHEEL_TOKEN, else the embedded platform's admin token
    (FLYWHEEL_DATA_DIR/admin-token), else none."""
    if token := os.environ.get(TOKEN_VARIABLE, "").strip():
        return token
    try:
        return (FlywheelSettings().data_dir / ADMIN_TOKEN_FILE).read_text().strip() or None
    except OSError:
        return None


def error_from_response(response: httpx.Response, service_name: str) -> FlywheelError:
    """The typed exception for an error answer from `service_name`, carrying its `detail` and status."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:  # not JSON: a proxy's page, or a crash before the app answered
        body = None
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):  # FastAPI's 422: one entry per invalid field
        return InvalidRequestError(f"invalid request: {validation_message(detail)}", status)
    message = detail if isinstance(detail, str) else (response.text.strip() or response.reason_phrase)
    if status == 400:
        where = body if isinstance(body, dict) else {}
        return InvalidRequestError(message, status, where.get("position"), where.get("token"))
    if status == 422:
        return InvalidRequestError(message, status)
    if status in (401, 403):
        hint = "; send a valid token: set FLYWHEEL_TOKEN" if status == 401 else ""
        return AccessDeniedError(f"the {service_name} refused: {message}{hint}", status)
    if status == 404:
        return NotFoundError(message, status)
    if status == 409:
        return ConflictError(message, status)
    if status == 413:
        return PayloadTooLargeError(message, status)
    return FlywheelError(f"the {service_name} answered {status} {response.reason_phrase}: {message}", status)


def validation_message(errors: list[Any]) -> str:
    """FastAPI's validation errors as one line: `params[0].value: String should have at most ...`."""
    return "; ".join(f"{_field_name(error.get('loc', []))}: {error.get('msg', error)}" for error in errors)


def _field_name(location: list[str | int]) -> str:
    parts = location[1:] if location[:1] == ["body"] else location
    name = ""
    for part in parts:
        name += f"[{part}]" if isinstance(part, int) else f".{part}" if name else str(part)
    return name or "body"


def path_segment(value: str) -> str:
    """`value` as one path segment: a name with `/` or spaces stays one segment."""
    return quote(value, safe="")


def page_params(page_size: int, page_token: str | None) -> Json:
    """The query parameters asking for one page of a listing."""
    return {"page_size": page_size} | ({"page_token": page_token} if page_token else {})
