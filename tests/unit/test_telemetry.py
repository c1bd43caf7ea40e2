"""Logs are one JSON object per line, with the fields passed in `extra`; multiprocess metrics update
without a system call; what the hot routes count is summed in the process and written on a flush."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from shared.telemetry import (
    JsonFormatter,
    PendingCounter,
    PendingHistogram,
    flush_pending_metrics,
    metrics_exposition,
)


def test_log_line_is_json_with_service_and_extra_fields() -> None:
    record = logging.LogRecord("shared.bus", logging.WARNING, __file__, 1, "handler failed", None, None)
    record.topic = "run-completed"
    record.attempt = 2
    line = json.loads(JsonFormatter("registry").format(record))
    assert line["service"] == "registry"
    assert line["level"] == "warning"
    assert line["message"] == "handler failed"
    assert (line["topic"], line["attempt"]) == ("run-completed", 2)
    assert "args" not in line
    assert "msecs" not in line


def test_exceptions_are_logged_with_their_traceback() -> None:
    try:
        raise ValueError("bad input")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    line = json.loads(JsonFormatter("trainer").format(record))
    assert "ValueError: bad input" in line["exception"]


# Run in a fresh interpreter: prometheus_client picks its multiprocess mode when it is first imported.
_EVERY_METRIC_SKIPS_GETPID = """
import gc, os, sys
import services.batch.app, services.monitor.app, services.registry.app, services.serving.app
import services.trainer.app
import shared.prometheus_values
from prometheus_client import Counter, values

made = [obj for obj in gc.get_objects() if type(obj).__name__ == "MmapedValue"]
assert made, "no multiprocess metric was made"
others = [obj for obj in made if type(obj) is not values.ValueClass]
assert not others, f"{len(others)} metrics made before shared.prometheus_values took effect"

# The values ask shared.prometheus_values for the pid: told of another, they move to that process's file.
counter = Counter("flywheel_test_updates_total", "test")
shared.prometheus_values._pid = 4_000_000_123
counter.inc()
assert os.path.exists(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "counter_4000000123.db"))
print("ok")
"""


def test_multiprocess_metrics_update_without_a_getpid_system_call(tmp_path: Path) -> None:
    environment = os.environ | {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", _EVERY_METRIC_SKIPS_GETPID],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


BUCKETS = (0.001, 0.01, 0.1, 1.0)
# On the bounds, between them, beyond the last, negative and zero: where bucket choice could differ.
AMOUNTS = [0.0, 0.001, 0.0010001, 0.005, 0.01, 0.1, 0.5, 1.0, 7.5, -0.2, 0.001, 1e-9]


def test_pending_histogram_exposes_as_the_observed_one_once_flushed() -> None:
    registry = CollectorRegistry()
    observed = Histogram("observed_seconds", "x", ["route"], buckets=BUCKETS, registry=registry)
    pending_child = Histogram("pending_seconds", "x", ["route"], buckets=BUCKETS, registry=registry)
    pending = PendingHistogram(pending_child.labels("/a"))
    for amount in AMOUNTS:
        observed.labels("/a").observe(amount)
        pending.observe(amount)

    def exposed(name: str) -> list[str]:
        text = generate_latest(registry).decode()
        lines = [line.replace(name, "metric") for line in text.splitlines() if line.startswith(name + "_")]
        return [line for line in lines if not line.startswith("metric_created")]  # when each was made

    assert exposed("pending_seconds") != exposed("observed_seconds")  # nothing written before the flush
    flush_pending_metrics()
    assert exposed("pending_seconds") == exposed("observed_seconds")
    flush_pending_metrics()  # flushed counts are not added twice
    assert exposed("pending_seconds") == exposed("observed_seconds")


def test_pending_counter_adds_its_sum_on_flush_and_the_exposition_flushes() -> None:
    counted = Counter("pending_requests", "x", ["route"])  # the default registry, as the services' metrics
    pending = PendingCounter(counted.labels("/b"))
    for _ in range(5):
        pending.inc()
    pending.inc(2.5)
    assert counted.labels("/b")._value.get() == 0
    assert 'pending_requests_total{route="/b"} 7.5' in metrics_exposition().decode()
