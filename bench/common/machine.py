"""How busy the machine was: other work on a small machine skews every figure, so the benchmarks say so."""

from __future__ import annotations

import time

CPU_SAMPLE_SECONDS = 1.0
BUSY_CPU_FRACTION = 0.2


def cpu_busy_fraction(seconds: float = CPU_SAMPLE_SECONDS) -> float | None:
    """How busy the machine's CPUs were over the next `seconds` (from /proc/stat); None off Linux."""
    try:
        before = _cpu_times()
        time.sleep(seconds)
        after = _cpu_times()
    except OSError:
        return None
    total = sum(after) - sum(before)
    idle = (after[3] + after[4]) - (before[3] + before[4])  # idle and iowait
    return (total - idle) / total if total else None


def percent(fraction: float | None) -> str:
    return "?" if fraction is None else f"{fraction:.0%}"


def busy_warning(busy: float | None, how_measured: str) -> str | None:
    """A warning to print next to the figures when the machine was busy before the benchmark started;
    `how_measured` says what the benchmark does about it."""
    if busy is None or busy < BUSY_CPU_FRACTION:
        return None
    return (
        f"WARNING: the machine was busy ({busy:.0%} CPU in use by others just before the benchmark); "
        f"{how_measured}, but the figures are noisier than usual"
    )


def _cpu_times() -> list[int]:
    with open("/proc/stat") as stat:
        return [int(field) for field in stat.readline().split()[1:]]
