"""The two measurements: logging throughput and filtered, ordered search latency.

Both servers are measured in turns (a block of runs on one, the same block on the other; one search
on one, then on the other), so that whatever else the machine is doing weighs on both alike.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.registry.clients import TrackingClient
from bench.registry.workload import VALUES_PER_RUN, RunData

LOGGING_BLOCK_RUNS = 50
SEARCH_WARMUPS = 3
SEARCH_REPETITIONS = 20


@dataclass(frozen=True)
class Target:
    """A server's client, the experiment it works in, and how to read the CPU seconds the server (with
    its database backends) has used so far, read outside the timed requests."""

    client: TrackingClient
    experiment_id: str
    cpu_seconds: Callable[[], float]


@dataclass(frozen=True)
class Latency:
    """Milliseconds over a series of requests."""

    count: int
    p50_ms: float
    p95_ms: float
    mean_ms: float

    @classmethod
    def of(cls, seconds: list[float]) -> Latency:
        return cls(
            len(seconds),
            percentile(seconds, 50) * 1000,
            percentile(seconds, 95) * 1000,
            statistics.fmean(seconds) * 1000,
        )


@dataclass(frozen=True)
class LoggingResult:
    runs: int
    seconds: float
    per_operation: dict[str, Latency]  # create run, log batch, finish run
    cpu_seconds: float  # the server's and its database backends'

    @property
    def cpu_ms_per_run(self) -> float:
        return self.cpu_seconds / self.runs * 1000

    @property
    def runs_per_second(self) -> float:
        return self.runs / self.seconds

    @property
    def values_per_second(self) -> float:
        return self.runs * VALUES_PER_RUN / self.seconds


@dataclass(frozen=True)
class SearchResult:
    latency: Latency
    aucs: list[float]  # what the search returned, in its order
    cpu_seconds: float  # the server's and its database backends', over the timed searches

    @property
    def cpu_ms_per_search(self) -> float:
        return self.cpu_seconds / self.latency.count * 1000


def percentile(samples: list[float], rank: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(rank / 100 * len(ordered)) - 1)]


def log_block(target: Target, runs: list[RunData]) -> float:
    """Log the runs the way an SDK does (create, one log-batch of 110 values, finish); return the seconds."""
    client = target.client
    started = time.perf_counter()
    for run in runs:
        now_ms = int(time.time() * 1000)
        run_id = client.create_run(target.experiment_id, now_ms)
        client.log_batch(run_id, run, now_ms)
        client.finish_run(run_id, now_ms + 1000)
    return time.perf_counter() - started


def log_runs(targets: list[Target], runs: list[RunData]) -> list[LoggingResult]:
    """Log the same runs into every target, block by block in turns; one result per target."""
    for target in targets:
        target.client.latencies.clear()
    seconds = [0.0] * len(targets)
    cpu = [0.0] * len(targets)
    for block_number, start in enumerate(range(0, len(runs), LOGGING_BLOCK_RUNS)):
        block = runs[start : start + LOGGING_BLOCK_RUNS]
        order = range(len(targets)) if block_number % 2 == 0 else reversed(range(len(targets)))
        for index in order:
            cpu_before = targets[index].cpu_seconds()
            seconds[index] += log_block(targets[index], block)
            cpu[index] += targets[index].cpu_seconds() - cpu_before
    return [
        LoggingResult(
            len(runs),
            elapsed,
            {operation: Latency.of(samples) for operation, samples in target.client.latencies.items()},
            cpu_seconds,
        )
        for target, elapsed, cpu_seconds in zip(targets, seconds, cpu, strict=True)
    ]


def time_searches(targets: list[Target]) -> list[SearchResult]:
    """Warm every target up, then time the same search on each in turns; one result per target."""
    for target in targets:
        for _ in range(SEARCH_WARMUPS):
            target.client.search_aucs(target.experiment_id)
    samples: list[list[float]] = [[] for _ in targets]
    returned: list[list[float]] = [[] for _ in targets]
    cpu = [0.0] * len(targets)
    for _ in range(SEARCH_REPETITIONS):
        for index, target in enumerate(targets):
            cpu_before = target.cpu_seconds()
            started = time.perf_counter()
            returned[index] = target.client.search_aucs(target.experiment_id)
            samples[index].append(time.perf_counter() - started)
            cpu[index] += target.cpu_seconds() - cpu_before
    return [
        SearchResult(Latency.of(times), aucs, cpu_seconds)
        for times, aucs, cpu_seconds in zip(samples, returned, cpu, strict=True)
    ]
