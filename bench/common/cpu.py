"""CPU time spent by the processes of a phase (a benchmark, the service it measures, the Kafka broker),
from /proc: on 2 cores, who used them tells what limits a rate, and CPU per request or record moves less
than a rate does when others share the machine."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
_KAFKA_LIBS = re.compile(rb"libs-([0-9][^/\x00]*)/")


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU seconds of the process (all its threads) so far; None once it is gone."""
    fields = stat_fields(Path(f"/proc/{pid}/stat"))
    return None if fields is None else (int(fields[11]) + int(fields[12])) / _TICKS_PER_SECOND


def thread_cpu_seconds() -> dict[int, float]:
    """User plus system CPU seconds of each thread of this process so far, by thread id (threads that end
    meanwhile are left out)."""
    seconds = {}
    for stat in Path("/proc/self/task").glob("*/stat"):
        fields = stat_fields(stat)
        if fields is not None:
            seconds[int(stat.parent.name)] = (int(fields[11]) + int(fields[12])) / _TICKS_PER_SECOND
    return seconds


def process_group(group: int) -> list[int]:
    """The processes alive now in the process group (a server started in a session of its own, with
    every worker it forks)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = stat_fields(stat)
        if fields is not None and int(fields[2]) == group:
            members.append(int(stat.parent.name))
    return members


def group_cpu_seconds(group: int) -> float:
    """`cpu_seconds` of the process group's members alive now."""
    return sum(cpu_seconds(pid) or 0.0 for pid in process_group(group))


def stat_fields(stat: Path) -> list[str] | None:
    """A /proc/<pid>/stat file's fields after the command name (which may hold spaces): state, ppid, pgrp,
    ...; None when the process is gone."""
    try:
        return stat.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_tree(pid: int) -> list[int]:
    """The process and all its descendants alive now (a service's uvicorn workers)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        if (fields := stat_fields(stat)) is not None:
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, pending = [], [pid]
    while pending:
        tree.append(current := pending.pop())
        pending += children.get(current, [])
    return tree


def tree_cpu_seconds(pid: int) -> float | None:
    """`cpu_seconds` of the process and its descendants alive now; None once the process is gone."""
    if (own := cpu_seconds(pid)) is None:
        return None
    return own + sum(cpu_seconds(child) or 0.0 for child in process_tree(pid)[1:])


def kafka_broker() -> tuple[int | None, str]:
    """The local Kafka broker's process id and version (from its class path, as infra.sh starts it);
    (None, "unknown") when no broker runs on this machine."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"kafka.Kafka\x00" in command or command.endswith(b"kafka.Kafka"):
            match = _KAFKA_LIBS.search(command)
            return int(entry.name), match.group(1).decode() if match else "unknown"
    return None, "unknown"


@dataclass
class CpuMeter:
    """CPU seconds used by each named process between `start` and `stop`; for those named in `trees`, by
    the process and its descendants (the batch service's workers)."""

    pids: dict[str, int]
    trees: frozenset[str] = frozenset()
    used: dict[str, float] = field(default_factory=dict)
    _before: dict[str, float] = field(default_factory=dict)

    def _seconds(self, name: str, pid: int) -> float | None:
        return tree_cpu_seconds(pid) if name in self.trees else cpu_seconds(pid)

    def start(self) -> None:
        for name, pid in self.pids.items():
            if (seconds := self._seconds(name, pid)) is not None:
                self._before[name] = seconds

    def add_new(self, name: str, pid: int) -> None:
        """A process started during the phase: all its CPU time counts."""
        self.pids[name] = pid
        self._before[name] = 0.0

    def stop(self) -> dict[str, float]:
        for name, pid in self.pids.items():
            after = self._seconds(name, pid)
            if after is not None and name in self._before:
                self.used[name] = after - self._before[name]
        return self.used
