"""A small synchronous client for the monitor's alert subscribers: webhook subscriptions, their delivery
log, and the alert stream (server-sent events).

Every method returns the server's JSON as plain dicts; errors become the exceptions in `flywheel.errors`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from flywheel.errors import ServiceUnavailableError
from flywheel.service_client import (
    DEFAULT_TIMEOUT_SECONDS,
    Json,
    ServiceAddress,
    ServiceClient,
    error_from_response,
    page_params,
    path_segment,
)

MONITOR = ServiceAddress("monitor", "--monitor-url", "FLYWHEEL_MONITOR_URL", "http://127.0.0.1:8084")
STREAM_READ_TIMEOUT_SECONDS = 120.0  # the monitor comments on an idle stream every 10 s by default
RECONNECT_ATTEMPTS = 5  # after the stream broke, before giving up (rides out a monitor's restart)
RECONNECT_WAIT_SECONDS = 1.0


@dataclass(frozen=True)
class ServerSentEvent:
    """One event of a text/event-stream: its name (`event`), `data` and `id`."""

    event: str
    data: str
    id: str | None = None


def parse_server_sent_events(lines: Iterable[str]) -> Iterator[ServerSentEvent]:
    """Events from the lines of a text/event-stream, as the HTML standard reads them: fields up to a blank
    line make an event; comments (`:`) and events without data are skipped."""
    event, event_id = "", None
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield ServerSentEvent(event or "message", "\n".join(data), event_id)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id" and "\0" not in value:
            event_id = value


class MonitorClient(ServiceClient):
    """The monitor over HTTP. Use as a context manager, or call `close()`, to release the connections."""

    address = MONITOR

    def __init__(self, base_url: str | None = None, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        super().__init__(base_url, timeout)

    def set_policy(self, model: str, policy: dict[str, Any]) -> Json:
        """Set how the model is watched (drift windows and tests, alerts, retraining): the policy."""
        return self._send("PUT", f"/models/{path_segment(model)}/policy", json=policy)

    def list_reports(
        self, model: str, version: int | None = None, page_size: int = 100, page_token: str | None = None
    ) -> Json:
        """One page of the model's closed windows, newest first: {"reports": [...], "next_page_token"}."""
        version_filter = {"version": version} if version is not None else {}
        return self._get(
            f"/models/{path_segment(model)}/reports",
            params=version_filter | page_params(page_size, page_token),
        )

    def list_alerts(
        self, model: str | None = None, page_size: int = 100, page_token: str | None = None
    ) -> Json:
        """One page of drift alerts (one per episode), newest first: {"alerts": [...], ...}."""
        model_filter = {"model": model} if model else {}
        return self._get("/alerts", params=model_filter | page_params(page_size, page_token))

    def create_subscription(
        self,
        url: str,
        *,
        secret: str | None = None,
        event_types: list[str] | None = None,
        model: str | None = None,
        min_severity: str | None = None,
        description: str | None = None,
    ) -> Json:
        """Subscribe a webhook; the subscription with its secret (the only time the monitor shows it)."""
        optional = {
            "secret": secret,
            "event_types": event_types,
            "model": model,
            "min_severity": min_severity,
            "description": description,
        }
        body = {"url": url} | {key: value for key, value in optional.items() if value is not None}
        return self._send("POST", "/subscriptions", json=body)

    def list_subscriptions(self, page_size: int = 100, page_token: str | None = None) -> Json:
        """One page of subscriptions, newest first: {"subscriptions": [...], "next_page_token": ...}."""
        return self._get("/subscriptions", params=page_params(page_size, page_token))

    def get_subscription(self, subscription_id: str) -> Json:
        return self._get(f"/subscriptions/{path_segment(subscription_id)}")

    def delete_subscription(self, subscription_id: str) -> None:
        """Stop sending to the webhook and forget its delivery log."""
        self._request("DELETE", f"/subscriptions/{path_segment(subscription_id)}")

    def list_deliveries(
        self,
        subscription_id: str,
        status: str | None = None,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> Json:
        """One page of the subscription's delivery log, newest first, each delivery with its attempts."""
        status_filter = {"status": status} if status else {}
        return self._get(
            f"/subscriptions/{path_segment(subscription_id)}/deliveries",
            params=status_filter | page_params(page_size, page_token),
        )

    def test_subscription(self, subscription_id: str) -> Json:
        """Send the webhook a signed ping; the delivery, queued."""
        return self._send("POST", f"/subscriptions/{path_segment(subscription_id)}/test")

    def stream_alerts(
        self,
        types: list[str] | None = None,
        model: str | None = None,
        min_severity: str | None = None,
        last_event_id: str | None = None,
    ) -> Iterator[ServerSentEvent]:
        """The alert stream's events as they come, until the monitor ends the stream (it does now and
        then; `follow_alerts` reconnects)."""
        with self._open_stream(types, model, min_severity, last_event_id) as response:
            yield from parse_server_sent_events(response.iter_lines())

    def follow_alerts(
        self, types: list[str] | None = None, model: str | None = None, min_severity: str | None = None
    ) -> Iterator[ServerSentEvent]:
        """The alert stream without end: reconnects whenever the stream ends, asking for what it missed
        (Last-Event-ID); when the stream breaks, tries again a few times (a monitor restarting) before
        raising. Raises at once when the monitor does not answer the first time."""
        last_event_id: str | None = None
        connected = False
        failures = 0
        while True:
            try:
                with self._open_stream(types, model, min_severity, last_event_id) as response:
                    connected, failures = True, 0
                    for event in parse_server_sent_events(response.iter_lines()):
                        last_event_id = event.id or last_event_id
                        yield event
            except ServiceUnavailableError:
                failures += 1
                if not connected or failures > RECONNECT_ATTEMPTS:
                    raise
                time.sleep(RECONNECT_WAIT_SECONDS)

    @contextmanager
    def _open_stream(
        self,
        types: list[str] | None,
        model: str | None,
        min_severity: str | None,
        last_event_id: str | None,
    ) -> Iterator[httpx.Response]:
        params: dict[str, Any] = {"types": ",".join(types)} if types else {}
        params |= {key: value for key, value in (("model", model), ("min_severity", min_severity)) if value}
        headers = {"accept": "text/event-stream"}
        if last_event_id:
            headers["last-event-id"] = last_event_id
        timeout = httpx.Timeout(self._http.timeout.connect, read=STREAM_READ_TIMEOUT_SECONDS)
        try:
            with self._http.stream(
                "GET", "/alerts/stream", params=params, headers=headers, timeout=timeout
            ) as response:
                if response.is_error:
                    response.read()
                    raise error_from_response(response, self.address.name)
                yield response
        except httpx.TransportError as error:
            raise ServiceUnavailableError(
                f"the monitor at {self.base_url} did not answer ({str(error) or type(error).__name__}); "
                f"start Flywheel with `flywheel up`, or point {MONITOR.variable} (or {MONITOR.option}) at a "
                "running monitor"
            ) from error
