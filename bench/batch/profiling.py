"""Profiling the batch service while it streams: py-spy samples it (without pausing it) from its first
committed result to its last, and the samples are summed up by function, where the time goes."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

SAMPLES_PER_SECOND = 100
TOP_FUNCTIONS = 20
PY_SPY_REQUIREMENT = "py-spy==0.4.3"


def ensure_py_spy() -> Path:
    """py-spy's executable beside this Python's, pip-installed into this virtualenv if missing (a wheel
    with the binary in it; not a dependency of the project)."""
    executable = Path(sys.executable).with_name("py-spy")
    if not executable.exists():
        print(f"installing {PY_SPY_REQUIREMENT} into {sys.prefix} (for --profile only)", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", PY_SPY_REQUIREMENT], check=True)
    return executable


class Profiler:
    """`py-spy record` on a running process and its subprocesses (the service's uvicorn workers), written
    as collapsed stacks (`raw`: one line per distinct stack, `frame;frame;... count`, readable by
    speedscope and flamegraph.pl)."""

    def __init__(self, pid: int, output: Path) -> None:
        self.output = output
        command = [
            str(ensure_py_spy()),
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--output",
            str(output),
        ]
        command += ["--rate", str(SAMPLES_PER_SECOND), "--nolineno", "--threads", "--nonblocking"]
        command += ["--subprocesses"]
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )

    def stop(self) -> None:
        """Stop sampling; py-spy writes its file on SIGINT."""
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)
        try:
            _, errors = self._process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            _, errors = self._process.communicate()
        if not self.output.exists():
            raise RuntimeError(f"py-spy wrote no profile: {errors.decode(errors='replace')[-2000:]}")


@dataclass(frozen=True)
class ProfileSummary:
    seconds: float  # how long the service was sampled
    samples: int
    threads: list[tuple[str, int]]  # samples per thread, most first
    modules: list[tuple[str, int]]  # own time by the project's files and other packages
    own: list[tuple[str, int]]  # samples with the function on top of the stack
    inclusive: list[tuple[str, int]]  # samples with the function anywhere below its thread's entry

    def lines(self) -> list[str]:
        if not self.samples:
            return ["no samples (was the service idle?)"]
        possible = max(1, round(self.seconds * SAMPLES_PER_SECOND))  # samples of a thread never idle
        lines = [f"{self.samples:,} samples of running threads (idle ones not counted), by thread:"]
        lines += [
            f"  {_share(count, self.samples):>6}  {name} (running {_share(count, possible)} of the time)"
            for name, count in self.threads
        ]
        lines.append(
            "own time by module (a C function, like orjson.loads or session.run, counts for its caller):"
        )
        lines += [f"  {_share(count, self.samples):>6}  {name}" for name, count in self.modules]
        lines.append("own time by function:")
        lines += [f"  {_share(count, self.samples):>6}  {name}" for name, count in self.own]
        lines.append("inclusive time (the function and what it calls), below each thread's entry point:")
        lines += [f"  {_share(count, self.samples):>6}  {name}" for name, count in self.inclusive]
        return lines


def summarize(raw: Path, seconds: float, top: int = TOP_FUNCTIONS) -> ProfileSummary:
    """The samples of `raw`, taken over `seconds`, summed by thread, module and function."""
    stacks: list[tuple[str, list[str], int]] = []
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = stack.split(";")
        thread, functions = (frames[0], frames[1:]) if frames[0].startswith("thread") else ("?", frames)
        stacks.append((thread, functions, int(count_text)))
    # Each thread's entry point (runpy, uvicorn, asyncio's runner; threading's bootstrap) is on nearly
    # every one of its stacks: left out of the inclusive list, which then starts where the work does.
    entries = {
        thread: _entry_frames([(f, c) for t, f, c in stacks if t == thread]) for thread, _, _ in stacks
    }
    threads: Counter[str] = Counter()
    modules: Counter[str] = Counter()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for thread, functions, count in stacks:
        threads[thread] += count
        if functions:
            own[functions[-1]] += count
            modules[_module(functions[-1])] += count
        for function in set(functions) - entries[thread]:
            inclusive[function] += count
    return ProfileSummary(
        seconds,
        sum(threads.values()),
        threads.most_common(),
        modules.most_common(top),
        own.most_common(top),
        inclusive.most_common(top),
    )


def _entry_frames(stacks: list[tuple[list[str], int]], share: float = 0.9) -> set[str]:
    """The frames a thread's stacks start with, down to where they part: the longest prefix that at least
    `share` of the thread's samples have (a few stacks are cut short when py-spy samples without pausing)."""
    total = sum(count for _, count in stacks)
    prefix: list[str] = []
    while True:
        following: Counter[str] = Counter()
        for functions, count in stacks:
            if functions[: len(prefix)] == prefix and len(functions) > len(prefix):
                following[functions[len(prefix)]] += count
        if not following:
            return set(prefix)
        frame, count = following.most_common(1)[0]
        if count < share * total:
            return set(prefix)
        prefix.append(frame)


def _module(frame: str) -> str:
    """`function (path)` -> the project's file (services/..., shared/...), else the top-level package."""
    path = frame.rpartition(" (")[2].rstrip(")")
    if path.startswith(("services/", "shared/", "bench/")):
        return path
    return path.split("/", 1)[0]


def _share(count: int, total: int) -> str:
    return f"{count / total:.1%}"
