"""Logs are one JSON object per line, with the fields passed in `extra`."""

from __future__ import annotations

import json
import logging

from shared.telemetry import JsonFormatter


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
