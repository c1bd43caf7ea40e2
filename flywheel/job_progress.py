"""Following a job (training, or a batch file job) until it ends: a progress bar redrawn in place on a
terminal, or a plain line per change when the output is a file or a pipe (so logs are not flooded with
carriage returns)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, TextIO

from flywheel.service_client import Json

FINISHED_STATUSES = ("succeeded", "failed")
POLL_SECONDS = 1.0
BAR_WIDTH = 30


class JobSource(Protocol):
    def get_job(self, job_id: str) -> Json: ...


def follow_job(
    client: JobSource,
    job_id: str,
    out: TextIO,
    poll_seconds: float = POLL_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
    line: Callable[[Json], str] | None = None,
) -> Json:
    """Poll the job every `poll_seconds` and show its progress on `out` until it succeeds or fails;
    return the finished job. `line` describes the job after the bar (default: `progress_line`)."""
    describe = line or progress_line
    on_terminal = out.isatty()
    shown = ""
    while True:
        job = client.get_job(job_id)
        if on_terminal:
            bar = progress_bar(job, describe)
            out.write(f"\r{bar.ljust(len(shown))}")  # padded: a shorter line must cover the longer one
            out.flush()
            shown = bar
        elif (text := describe(job)) != shown:
            print(text, file=out, flush=True)
            shown = text
        if job["status"] in FINISHED_STATUSES:
            if on_terminal:
                out.write("\n")
            return job
        sleep(poll_seconds)


def progress_bar(job: Json, line: Callable[[Json], str] | None = None) -> str:
    """`[#########---------------------]  30%  running: training`."""
    filled = round(_fraction(job) * BAR_WIDTH)
    return f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {(line or progress_line)(job)}"


def progress_line(job: Json) -> str:
    """` 30%  running: training`, or `100%  succeeded` once the stage is the status itself."""
    state = job["status"] if job["stage"] == job["status"] else f"{job['status']}: {job['stage']}"
    return f"{round(_fraction(job) * 100):3d}%  {state}"


def _fraction(job: Json) -> float:
    return min(max(float(job["progress"]), 0.0), 1.0)
