"""What a `flywheel` command reports, apart from how the command line prints it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Report:
    """What a command shows: `data` with --json, `text` otherwise; `exit_status` is what it exits with
    (a command can succeed in asking and still report a failure, such as a followed job that failed)."""

    data: Any
    text: str
    exit_status: int = 0
