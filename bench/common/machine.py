"""How busy the machine was: other work on a small machine skews every figure, so the benchmarks say so."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

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


@dataclass(frozen=True)
class WakeUpCost:
    """CPU one thread spends to wake another blocked on a pipe, and be woken back, per wake-up."""

    across_cores_us: float
    same_core_us: float

    def text(self) -> str:
        across, same = self.across_cores_us, self.same_core_us
        return f"a wake-up costs {across:.0f} µs of CPU across cores, {same:.0f} on one"


def wake_up_cost(round_trips: int = 2000) -> WakeUpCost | None:
    """Ping-pong between two processes, each pinned to a core, then both on one core. A machine where a
    wake-up across cores costs tens of microseconds (a nested virtual machine: each one is an interrupt
    between virtual CPUs) charges that to every hand-off between threads, processes and the broker, so
    rates there are not comparable with a machine where it costs a few. None with fewer than 2 cores or
    off Linux."""
    if not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2:
        return None
    first, second = sorted(os.sched_getaffinity(0))[:2]
    return WakeUpCost(
        across_cores_us=_ping_pong(first, second, round_trips),
        same_core_us=_ping_pong(first, first, round_trips),
    )


def _ping_pong(parent_core: int, child_core: int, round_trips: int) -> float:
    allowed = os.sched_getaffinity(0)
    to_child, from_parent = os.pipe()[::-1]
    to_parent, from_child = os.pipe()[::-1]
    try:
        pid = os.fork()
        if pid == 0:  # the child: answer every byte, then leave without running any cleanup
            os.sched_setaffinity(0, {child_core})
            for _ in range(round_trips):
                os.read(from_parent, 1)
                os.write(to_parent, b"x")
            os._exit(0)
        os.sched_setaffinity(0, {parent_core})
        started = time.process_time()
        for _ in range(round_trips):
            os.write(to_child, b"x")
            os.read(from_child, 1)
        parent_cpu = time.process_time() - started
        _, _, child_usage = os.wait4(pid, 0)
    finally:
        os.sched_setaffinity(0, allowed)
        for end in (to_child, from_parent, to_parent, from_child):
            os.close(end)
    child_cpu = child_usage.ru_utime + child_usage.ru_stime
    return (parent_cpu + child_cpu) / (2 * round_trips) * 1e6
