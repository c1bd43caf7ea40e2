"""The system under test: the registry with the models uploaded behind `production`, and the batch service
(`python -m services.batch`) started once the request topic is full, followed until it has committed a
result for every request."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.batch.profiling import Profiler
from bench.batch.topics import GroupProgress
from bench.common.cpu import CpuMeter
from bench.common.processes import ServerProcess, start_flywheel_service

READY_SECONDS = 120.0
PROGRESS_POLL_SECONDS = 0.05
# Longest the service may take for the whole stream, beyond a floor of 1,000 records a second.
STREAM_TIMEOUT_FLOOR_SECONDS = 120.0


class ServiceFailed(RuntimeError):
    """The batch service exited or stalled; the message holds its log's tail."""


@dataclass(frozen=True)
class StreamTopics:
    """One model's topics (plain names, as the service is configured) and the service's consumer group."""

    model: str

    @property
    def requests(self) -> str:
        return f"scoring-requests-{self.model}"

    @property
    def results(self) -> str:
        return f"scoring-results-{self.model}"

    @property
    def consumer_group(self) -> str:
        return f"batch-scoring-{self.model}"


@dataclass(frozen=True)
class ServiceFigure:
    """The batch service's run over the whole request topic. `started` is when its process was started;
    `first` when its first batch's results were committed (with `first_records` of them); `done` when the
    last were."""

    model: str
    records: int
    first_records: int
    to_first_seconds: float
    first_to_done_seconds: float
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds per process, first to done
    produce_retries: int = 0  # aiokafka's "retrying" warnings in the service's log

    @property
    def rows_per_second(self) -> float:
        """Steady streaming: the results committed after the first batch, over the time they took."""
        return (self.records - self.first_records) / self.first_to_done_seconds

    @property
    def rows_per_second_from_start(self) -> float:
        """From the process's start (Python, the model's loading, joining the group) to the last result."""
        return self.records / (self.to_first_seconds + self.first_to_done_seconds)


def start_registry(
    repo_root: Path, infra: dict[str, str], database_url: str, namespace: str, log_dir: Path
) -> ServerProcess:
    settings = {"FLYWHEEL_DATABASE_URL": database_url}
    return start_flywheel_service("registry", repo_root, infra, namespace, log_dir, settings)


def start_batch(
    repo_root: Path,
    infra: dict[str, str],
    *,
    database_url: str,
    registry_url: str,
    namespace: str,
    topics: StreamTopics,
    partitions: int,
    max_batch_records: int,
    log_dir: Path,
) -> ServerProcess:
    """The batch service with its defaults but for where things are: its request topic (records name
    their model), result topic and consumer group of the model's own, and a stable replica id; its log
    is `batch.log` in `log_dir`."""
    settings = {
        "FLYWHEEL_DATABASE_URL": database_url,
        "FLYWHEEL_BATCH_REGISTRY_URL": registry_url,
        "FLYWHEEL_BATCH_REQUEST_TOPICS": json.dumps({topics.requests: {"result_topic": topics.results}}),
        "FLYWHEEL_BATCH_CONSUMER_GROUP": topics.consumer_group,
        "FLYWHEEL_BATCH_REPLICA_ID": f"bench-{topics.model}",
        "FLYWHEEL_BATCH_MAX_BATCH_RECORDS": str(max_batch_records),
        "FLYWHEEL_BATCH_PREDICTION_LOG_SAMPLE_RATE": "0.01",
        "FLYWHEEL_KAFKA_TOPIC_PARTITIONS": str(partitions),
    }
    return start_flywheel_service("batch", repo_root, infra, namespace, log_dir, settings)


async def follow_stream(
    model: str,
    service: ServerProcess,
    started: float,
    progress: GroupProgress,
    records: int,
    meter: CpuMeter,
    profile_path: Path | None,
) -> ServiceFigure:
    """Poll the service's committed offsets from its start until all `records` are committed; CPU
    (and the profile, if asked for) from its first committed batch to its last."""
    timeout = STREAM_TIMEOUT_FLOOR_SECONDS + records / 1000
    first: tuple[float, int] | None = None
    profiler: Profiler | None = None
    try:
        while True:
            committed = await progress.committed()
            now = time.perf_counter()
            if committed and first is None:
                first = (now, committed)
                meter.start()
                if profile_path is not None:
                    profiler = Profiler(service.process.pid, profile_path)
            if committed >= records:
                break
            if service.process.poll() is not None:
                raise ServiceFailed(
                    f"the batch service exited with {service.process.returncode}:\n{service.log_tail()}"
                )
            if now - started > timeout:
                raise ServiceFailed(
                    f"{committed:,} of {records:,} results committed after {timeout:.0f}s:\n"
                    f"{service.log_tail()}"
                )
            await asyncio.sleep(PROGRESS_POLL_SECONDS)
        cpu = meter.stop()
    finally:
        if profiler is not None:
            profiler.stop()
    assert first is not None
    return ServiceFigure(
        model=model,
        records=committed,
        first_records=first[1],
        to_first_seconds=first[0] - started,
        first_to_done_seconds=now - first[0],
        cpu=cpu,
    )


def produce_retries(log_path: Path) -> int:
    """How often the service's producer had a produce request refused and retried it (aiokafka logs a
    warning each time; see bench/README.md on transaction verification)."""
    if not log_path.exists():
        return 0
    return sum("retrying" in line for line in log_path.read_text(errors="replace").splitlines())
