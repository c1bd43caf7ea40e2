"""Structured JSON logs and Prometheus metrics, the same on every service."""

from __future__ import annotations

import bisect
import json
import logging
import os
import re
import time
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# LogRecord's own attributes; everything else on a record came from `extra=` and is logged as a field.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's ANSI-coloured twin of `message`
}

HTTP_REQUESTS = Counter(
    "flywheel_http_requests_total", "HTTP requests answered", ["service", "method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "flywheel_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["service", "method", "route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


# Secrets that must never be written: a URL's password (a database URL in a connection error), a bearer
# token, and the values `hide_secrets` was given (S3 keys, service and admin tokens).
_URL_PASSWORD = re.compile(r"(?P<start>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:)[^\s/@]+@")
_BEARER = re.compile(r"(?i)(?P<start>\bbearer\s+)[^\s\"',]+")
_hidden: set[str] = set()
REDACTED = "***"


def hide_secrets(*values: str) -> None:
    """Redact these values wherever `redact` runs (every log line, every error answer); short ones are
    ignored (they would redact ordinary words)."""
    _hidden.update(value for value in values if len(value) >= 6)


def redact(text: str) -> str:
    """`text` without secrets: URL passwords, bearer tokens and the values given to `hide_secrets`."""
    text = _URL_PASSWORD.sub(rf"\g<start>{REDACTED}@", text)
    text = _BEARER.sub(rf"\g<start>{REDACTED}", text)
    for value in _hidden:
        text = text.replace(value, REDACTED)
    return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, service, logger, message, and any `extra` fields, with secrets
    redacted (`redact`)."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update((key, value) for key, value in vars(record).items() if key not in _RECORD_ATTRIBUTES)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, default=str))


def logging_config(service: str, level: str = "INFO") -> dict[str, Any]:
    """JSON lines on stderr for every logger, as a `logging.config.dictConfig` dict (which uvicorn also
    applies in each of its worker processes)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "shared.telemetry.JsonFormatter", "service": service}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
        },
        "loggers": {name: {"handlers": [], "propagate": True} for name in ("uvicorn", "uvicorn.error")},
        "root": {"handlers": ["stderr"], "level": level.upper()},
    }


class PendingCounter:
    """A counter child's increments summed here and added to it by `flush_pending_metrics`.

    For what the hot routes count on every request: with several workers each write to a child locks and
    packs into a shared mmap, 1.2 µs a counter and 2.3 µs a histogram observation here, about 7 µs of a
    1-row request's 130-150 on the event loop. Summed in plain floats they cost 0.1 µs, and reach the
    children at most a second late (at once for a scrape of this process's /metrics). Used from the event
    loop's thread only, as is the flush."""

    __slots__ = ("child", "pending")

    def __init__(self, child: Counter) -> None:
        self.child = child
        self.pending = 0.0
        _PENDING.append(self)

    def inc(self, amount: float = 1.0) -> None:
        self.pending += amount

    def flush(self) -> None:
        if self.pending:
            self.child.inc(self.pending)
            self.pending = 0.0


class PendingHistogram:
    """A histogram child's observations counted here, per bucket, and added to it by
    `flush_pending_metrics` (see `PendingCounter`)."""

    __slots__ = ("child", "counts", "sum", "upper_bounds")

    def __init__(self, child: Histogram) -> None:
        self.child = child
        # prometheus_client keeps these private; tests/unit/test_telemetry.py checks that flushed
        # observations expose exactly as observed ones.
        self.upper_bounds: list[float] = list(child._upper_bounds)
        self.counts = [0] * len(self.upper_bounds)
        self.sum = 0.0
        _PENDING.append(self)

    def observe(self, amount: float) -> None:
        self.sum += amount
        # The first bucket whose bound is >= amount, as Histogram.observe picks it (the last is +Inf).
        self.counts[bisect.bisect_left(self.upper_bounds, amount)] += 1

    def flush(self) -> None:
        if not any(self.counts):
            return
        self.child._sum.inc(self.sum)
        for bucket, count in zip(self.child._buckets, self.counts, strict=True):
            if count:
                bucket.inc(count)
        self.counts = [0] * len(self.upper_bounds)
        self.sum = 0.0


_PENDING: list[PendingCounter | PendingHistogram] = []
PENDING_FLUSH_SECONDS = 1.0  # each service's lifespan flushes this often (shared.service)


def flush_pending_metrics() -> None:
    """Add what every `PendingCounter` and `PendingHistogram` of this process holds to its child."""
    for metric in _PENDING:
        metric.flush()


def metrics_exposition() -> bytes:
    """Every metric in Prometheus' text format; summed over the worker processes when several serve the
    same port (they write to PROMETHEUS_MULTIPROC_DIR, see shared.service.run_service)."""
    flush_pending_metrics()  # this process's, at least, are exact
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return generate_latest()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


class PrometheusMiddleware:
    """Counts and times every HTTP request by route template (not raw path, which would explode labels)."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            template = route.path if isinstance(route, Route) else "unmatched"
            method = scope["method"]
            HTTP_REQUESTS.labels(self.service, method, template, str(status)).inc()
            HTTP_LATENCY.labels(self.service, method, template).observe(time.perf_counter() - started)


class RouteMetrics:
    """The HTTP metrics of requests answered outside PrometheusMiddleware (a service's hot routes), under
    the same names and labels; each label set's children are looked up once."""

    def __init__(self, service: str) -> None:
        self.service = service
        self._children: dict[tuple[str, str, int], tuple[PendingCounter, PendingHistogram]] = {}

    def observe(self, method: str, template: str, status: int, started: float) -> None:
        """Count one request to `template` answered with `status`, begun at `started` (perf_counter)."""
        children = self._children.get((method, template, status))
        if children is None:
            children = (
                PendingCounter(HTTP_REQUESTS.labels(self.service, method, template, str(status))),
                PendingHistogram(HTTP_LATENCY.labels(self.service, method, template)),
            )
            self._children[(method, template, status)] = children
        requests, latency = children
        requests.inc()
        latency.observe(time.perf_counter() - started)
