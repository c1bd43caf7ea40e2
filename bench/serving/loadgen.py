"""The load generator every server gets: oha (a Rust HTTP load generator), installed once with cargo into
the user's cache and run for a fixed time at a fixed number of keep-alive connections, each sending a POST
body (a line of the cell's file, at random) as soon as its previous answer arrived."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OHA_VERSION = "1.16.0"
OHA_ROOT = Path.home() / ".cache" / "flywheel" / "oha"
OHA = OHA_ROOT / "bin" / "oha"
# oha's own limit for a request; a server slower than this has failed the cell anyway.
REQUEST_TIMEOUT_SECONDS = 30


class LoadGeneratorMissing(RuntimeError):
    """oha is not installed and cannot be built (no cargo)."""


@dataclass(frozen=True)
class LoadResult:
    """One oha run: answers by status, client-side errors by kind, latencies of the answers."""

    seconds: float
    statuses: dict[str, int]
    errors: dict[str, int]
    p50_ms: float | None
    p99_ms: float | None
    command: list[str] = field(default_factory=list)
    # oha's own CPU: it shares the cores with the server, so what it takes the server cannot use.
    cpu_seconds: float = 0.0

    @property
    def ok(self) -> int:
        """Answers with a 2xx status."""
        return sum(count for status, count in self.statuses.items() if status.startswith("2"))

    @property
    def failed(self) -> int:
        """Non-2xx answers plus requests that got no answer: any of them fails the cell."""
        return sum(self.statuses.values()) - self.ok + sum(self.errors.values())

    @property
    def requests_per_second(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_per_request_us(self) -> float | None:
        """The load generator's CPU a request answered."""
        return self.cpu_seconds / self.ok * 1e6 if self.ok else None


def installed_version() -> str | None:
    if not OHA.exists():
        return None
    completed = subprocess.run([str(OHA), "--version"], capture_output=True, text=True)
    return completed.stdout.split()[-1] if completed.returncode == 0 and completed.stdout.split() else None


def ensure_oha() -> Path:
    """oha's binary, built with cargo the first time (a few minutes) and again only if the pin changes."""
    if installed_version() == OHA_VERSION:
        return OHA
    cargo = shutil.which("cargo") or str(Path.home() / ".cargo" / "bin" / "cargo")
    if not Path(cargo).exists():
        raise LoadGeneratorMissing(
            "the serving benchmark's load generator, oha, is built with cargo, which was not found: "
            "install Rust (rustup) or put cargo on PATH"
        )
    print(f"building oha {OHA_VERSION} into {OHA_ROOT} with cargo (a few minutes, once)", flush=True)
    subprocess.run(
        [cargo, "install", "oha", "--version", OHA_VERSION, "--locked", "--root", str(OHA_ROOT)], check=True
    )
    found = installed_version()
    if found != OHA_VERSION:
        raise LoadGeneratorMissing(f"{OHA} reports version {found} after installing {OHA_VERSION}")
    return OHA


def run_load(url: str, bodies: Path, concurrency: int, seconds: float) -> LoadResult:
    """POST bodies to `url` from `concurrency` keep-alive connections for `seconds`, each a line of
    `bodies` picked at random; answers still in flight at the end are waited for and counted."""
    command = [
        str(OHA),
        "--no-tui",
        "--output-format",
        "json",
        "-z",
        f"{seconds:g}s",
        "-c",
        str(concurrency),
        "-m",
        "POST",
        "-T",
        "application/json",
        "-Z",
        str(bodies),
        "-t",
        f"{REQUEST_TIMEOUT_SECONDS}s",
        "-w",  # wait for the answers in flight at the deadline instead of counting them as errors
        url,
    ]
    before = _children_cpu_seconds()
    completed = subprocess.run(command, capture_output=True, text=True, env=os.environ | {"NO_COLOR": "1"})
    cpu_seconds = _children_cpu_seconds() - before
    if completed.returncode != 0:
        raise RuntimeError(f"oha failed ({completed.returncode}): {completed.stderr.strip()[-2000:]}")
    return parse_oha_json(json.loads(completed.stdout), command, cpu_seconds)


def _children_cpu_seconds() -> float:
    """CPU of this process's children that have been waited for (oha, once `subprocess.run` returns)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def parse_oha_json(report: dict[str, Any], command: list[str], cpu_seconds: float = 0.0) -> LoadResult:
    percentiles = report.get("latencyPercentiles") or {}
    return LoadResult(
        seconds=float(report["summary"]["total"]),
        statuses={str(status): int(count) for status, count in report["statusCodeDistribution"].items()},
        errors={str(kind): int(count) for kind, count in report["errorDistribution"].items()},
        p50_ms=_milliseconds(percentiles.get("p50")),
        p99_ms=_milliseconds(percentiles.get("p99")),
        command=command,
        cpu_seconds=cpu_seconds,
    )


def _milliseconds(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000
