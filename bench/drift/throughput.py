"""The monitor service's throughput and memory from Kafka (issue 7's targets): at least the serving
target's 14,000 predictions/s on one core, with memory that stays flat over a 10-minute run.

What it starts, and always takes down again (also on Ctrl-C or SIGTERM): two fresh databases on the
`infra.sh` PostgreSQL (`bench_registry_<random>`, `bench_monitor_<random>`), the Kafka namespace
`bench-<random>` (its topics deleted at the end), the registry (`python -m services.registry`) with model
`credit` version 1 whose `reference_profile_uri` names a profile made by tests/monitor_data.py (uploaded to
MinIO, deleted at the end), and the monitor (`python -m services.monitor`, pinned to core 1 with `taskset`
when there are two cores) with its policy set through `PUT /models/credit/policy` (windows of 10,000 rows).
This process, the registry, the producer (bench/drift/producer.py) and py-spy run on core 0.

1. Top rate: a backlog of prediction-logged events (2,000 predictions each) is produced before the monitor
   starts; from its first committed offset, after a warm-up, the rate its consumer group's committed
   offsets advance at, in predictions/s, until the backlog is drained or the measuring time is over.
2. Steady run: the monitor restarted with its group moved to the end of the log, the producer at 14,000
   predictions/s for `--throughput-seconds`; every sample the monitor's RSS (VmRSS), CPU and consumer lag.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from minio import Minio
from prometheus_client.parser import text_string_to_metric_families

from bench.batch.profiling import Profiler, summarize
from bench.batch.topics import GroupProgress
from bench.common.cpu import cpu_seconds
from bench.common.databases import BenchDatabases
from bench.common.infrastructure import delete_kafka_topics
from bench.common.processes import ServerProcess, free_port, start_flywheel_service, start_server
from services.monitor.worker import PREDICTIONS_GROUP
from shared.events import Topic

TARGET_RATE = 14_000  # predictions/s: the serving target's rate
EVENT_ROWS = 2_000  # predictions per prediction-logged event: serving's batch size
WINDOW_ROWS = 10_000  # the policy's windows (the default)
FILL_RATE = 30_000  # the backlog is this many predictions a second's worth...
MODEL = "credit"
MONITOR_CORE = 1
OTHER_CORE = 0
READY_SECONDS = 120.0
POLL_SECONDS = 0.25
MAX_WARMUP_SECONDS = 60.0  # the top rate's warm-up ends after this long, however little was read
SLICE_SECONDS = 5.0  # the top rate is also reported per slice of this length
FLAT_MEMORY_GROWTH = 0.10  # the last third's largest RSS within 10% of the first third's
LAG_BOUND_SECONDS = 10.0  # lag stays bounded: the last third's largest under this many seconds of traffic
DRAIN_SECONDS = 60.0
POLICY = {"drift": {"window": {"max_rows": WINDOW_ROWS}}}
FULL_RUN_SECONDS = 600


@dataclass(frozen=True)
class ThroughputSettings:
    steady_seconds: float
    backlog_seconds: float  # the backlog: this many seconds' worth at FILL_RATE
    warmup_predictions: int  # of the top rate: read before measuring (the monitor's state fills up)
    measure_seconds: float  # of the top rate, after the warm-up
    request_rows: int  # rows per logged request (1: serving's 1-row requests)
    profile_dir: Path | None = None
    profile_seconds: float = 20.0
    rate: int = TARGET_RATE

    @property
    def sample_seconds(self) -> float:
        return 10.0 if self.steady_seconds >= 120 else 5.0

    @property
    def steady_warmup_seconds(self) -> float:
        return max(10.0, self.steady_seconds / 10)


@dataclass
class TopRate:
    backlog_predictions: int
    fill_seconds: float
    fill_predictions_per_second: float
    event_bytes: float
    to_first_commit_seconds: float
    warmup_seconds: float  # from the first commit to the start of the measuring
    warmup_predictions: int  # committed by then
    measured_seconds: float
    measured_predictions: int
    predictions_per_second: float
    drained: bool
    monitor_cpu_share: float | None  # of one core, over the measured time
    core_busy_share: float | None  # how busy the monitor's core was (by anyone)
    slices: list[float] = field(default_factory=list)  # predictions/s per slice
    counted: dict[str, float] = field(default_factory=dict)  # the monitor's own /metrics at the end
    profile: list[str] = field(default_factory=list)
    profiled_predictions_per_second: float | None = None

    @property
    def per_cpu_second(self) -> float | None:
        """Predictions per second of the monitor's CPU time: its rate on a core of its own, all of it."""
        if not self.monitor_cpu_share:
            return None
        return self.predictions_per_second / self.monitor_cpu_share


@dataclass
class Sample:
    seconds: float  # since the producer started
    produced: int  # predictions in the topic
    committed: int  # predictions the monitor's group committed
    rss_mb: float
    cpu_share: float | None  # of one core, since the previous sample
    core_busy_share: float | None

    @property
    def lag(self) -> int:
        return self.produced - self.committed


@dataclass
class SteadyRun:
    rate: int
    seconds: float
    producer: dict[str, Any]
    idle_rss_mb: float
    samples: list[Sample]
    warmup_seconds: float
    drain_seconds: float | None  # from the producer's end until the lag was 0; None if it never was
    counted: dict[str, float] = field(default_factory=dict)

    def _thirds(self) -> tuple[list[Sample], list[Sample]]:
        after = [sample for sample in self.samples if sample.seconds > self.warmup_seconds] or self.samples
        third = max(1, len(after) // 3)
        return after[:third], after[-third:]

    @property
    def first_third_rss_mb(self) -> float:
        return max(sample.rss_mb for sample in self._thirds()[0])

    @property
    def last_third_rss_mb(self) -> float:
        return max(sample.rss_mb for sample in self._thirds()[1])

    @property
    def rss_growth(self) -> float:
        return self.last_third_rss_mb / self.first_third_rss_mb - 1

    @property
    def rss_mb_per_minute(self) -> float:
        """The slope of a straight line through the RSS after the warm-up."""
        after = [sample for sample in self.samples if sample.seconds > self.warmup_seconds]
        if len(after) < 2:
            return 0.0
        slope = np.polyfit([s.seconds for s in after], [s.rss_mb for s in after], 1)[0]
        return float(slope * 60)

    @property
    def memory_flat(self) -> bool:
        return self.rss_growth <= FLAT_MEMORY_GROWTH

    @property
    def last_third_max_lag(self) -> int:
        return max(sample.lag for sample in self._thirds()[1])

    @property
    def lag_bounded(self) -> bool:
        return self.last_third_max_lag <= LAG_BOUND_SECONDS * self.rate and self.drain_seconds is not None

    @property
    def mean_cpu_share(self) -> float | None:
        """The monitor's CPU, in cores, averaged over the samples after the warm-up."""
        shares = [
            s.cpu_share for s in self.samples if s.seconds > self.warmup_seconds and s.cpu_share is not None
        ]
        return sum(shares) / len(shares) if shares else None

    @property
    def per_cpu_second(self) -> float | None:
        """Predictions per second of the monitor's CPU time in the run's last third: what it would read on
        a core of its own, all of it, in the state a long run leaves it in."""
        share = self.last_third_cpu_share
        return self.produced_per_second / share if share else None

    @property
    def last_third_cpu_share(self) -> float | None:
        shares = [sample.cpu_share for sample in self._thirds()[1] if sample.cpu_share is not None]
        return sum(shares) / len(shares) if shares else None

    @property
    def produced_per_second(self) -> float:
        return float(self.producer["predictions"]) / float(self.producer["seconds"])


@dataclass
class Throughput:
    settings: dict[str, Any]
    pinned: bool
    top: TopRate
    steady: SteadyRun

    @property
    def rate_met(self) -> bool:
        return self.top.predictions_per_second >= TARGET_RATE

    @property
    def full_length(self) -> bool:
        return self.steady.seconds >= FULL_RUN_SECONDS

    @property
    def memory_met(self) -> bool:
        return self.full_length and self.steady.memory_flat and self.steady.lag_bounded

    def as_json(self) -> dict[str, Any]:
        steady = asdict(self.steady)
        steady["samples"] = [asdict(sample) | {"lag": sample.lag} for sample in self.steady.samples]
        steady |= {
            "first_third_max_rss_mb": self.steady.first_third_rss_mb,
            "last_third_max_rss_mb": self.steady.last_third_rss_mb,
            "rss_growth": self.steady.rss_growth,
            "rss_mb_per_minute": self.steady.rss_mb_per_minute,
            "memory_flat": self.steady.memory_flat,
            "last_third_max_lag": self.steady.last_third_max_lag,
            "lag_bounded": self.steady.lag_bounded,
            "produced_per_second": self.steady.produced_per_second,
            "mean_cpu_share": self.steady.mean_cpu_share,
            "last_third_cpu_share": self.steady.last_third_cpu_share,
            "per_cpu_second": self.steady.per_cpu_second,
        }
        top = asdict(self.top) | {"per_cpu_second": self.top.per_cpu_second}
        return {
            "settings": self.settings,
            "pinned_to_one_core": self.pinned,
            "top_rate": top,
            "steady": steady,
            "targets": {
                "rate": {
                    "target": TARGET_RATE,
                    "measured": self.top.predictions_per_second,
                    "met": self.rate_met,
                },
                "memory_flat": {
                    "target_seconds": FULL_RUN_SECONDS,
                    "seconds": self.steady.seconds,
                    "met": self.memory_met,
                },
            },
        }


def can_pin() -> bool:
    """Two cores at least, both ours to use, and taskset to start the monitor on one of them."""
    try:
        allowed = os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        return False
    return shutil.which("taskset") is not None and {MONITOR_CORE, OTHER_CORE} <= allowed


@contextlib.contextmanager
def on_core(core: int | None) -> Iterator[None]:
    """Run this process (and what it starts) on `core`, and on the cores it had before afterwards."""
    if core is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class CoreMeter:
    """How busy one core was between calls to `share` (from /proc/stat), by anyone."""

    def __init__(self, core: int) -> None:
        self.label = f"cpu{core}"
        self._last = self._times()

    def _times(self) -> tuple[int, int] | None:
        try:
            for line in Path("/proc/stat").read_text().splitlines():
                fields = line.split()
                if fields[0] == self.label:
                    values = [int(value) for value in fields[1:]]
                    return sum(values), values[3] + values[4]  # total, idle + iowait
        except OSError:
            pass
        return None

    def share(self) -> float | None:
        now, before = self._times(), self._last
        self._last = now
        if now is None or before is None or now[0] == before[0]:
            return None
        return 1 - (now[1] - before[1]) / (now[0] - before[0])


class LogEnd:
    """The end offsets of a topic (summed over its partitions): how many records it holds."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self._partitions: list[TopicPartition] = []

    async def start(self, partitions: list[int]) -> None:
        await self._consumer.start()
        self._partitions = [TopicPartition(self.topic, partition) for partition in partitions]

    async def close(self) -> None:
        await self._consumer.stop()

    async def records(self) -> int:
        ends = await self._consumer.end_offsets(self._partitions)
        return int(sum(ends.values()))


class ThroughputBench:
    """One run of both phases; what it starts and creates is handed to `cleanup`, which undoes it."""

    def __init__(
        self,
        settings: ThroughputSettings,
        infra: dict[str, str],
        work_dir: Path,
        cleanup: ExitStack,
        repo: Path,
    ) -> None:
        self.settings = settings
        self.infra = infra
        self.bootstrap = infra["FLYWHEEL_KAFKA_BOOTSTRAP"]
        self.work_dir = work_dir
        self.cleanup = cleanup
        self.repo = repo
        self.suffix = secrets.token_hex(4)
        self.namespace = f"bench-{self.suffix}"
        self.topic = f"{self.namespace}.{Topic.PREDICTION_LOGGED.value}"
        self.group = f"{self.namespace}.{PREDICTIONS_GROUP}"
        self.pinned = can_pin()
        self.monitors = 0

    def run(self) -> Throughput:
        with on_core(OTHER_CORE if self.pinned else None):
            return self._run()

    def _run(self) -> Throughput:
        settings = self.settings
        databases = BenchDatabases(self.infra["FLYWHEEL_DATABASE_URL"], self.suffix, ("registry", "monitor"))
        print(
            f"creating databases {', '.join(databases.names.values())}; Kafka namespace {self.namespace}",
            flush=True,
        )
        databases.create()
        self.cleanup.callback(databases.drop)
        self.cleanup.callback(self.delete_topics)
        self.database_url = databases.url("monitor")
        registry = start_flywheel_service(
            "registry",
            self.repo,
            self.infra,
            self.namespace,
            self.work_dir,
            {"FLYWHEEL_DATABASE_URL": databases.url("registry")},
        )
        self.cleanup.callback(registry.stop)
        registry.wait_until_healthy("/health/ready", READY_SECONDS)
        self.registry_url = registry.base_url
        self.register_model()

        # The policy, stored by a first monitor before there is any traffic.
        monitor = self.start_monitor()
        response = httpx.put(f"{monitor.base_url}/models/{MODEL}/policy", json=POLICY, timeout=30.0)
        if response.status_code != 200:
            raise RuntimeError(f"PUT policy: {response.status_code} {response.text}")
        monitor.stop()

        partitions = asyncio.run(_partitions(self.bootstrap, self.topic))
        top = self.top_rate(partitions)
        asyncio.run(_move_group_to_end(self.bootstrap, self.group, self.topic, partitions))
        steady = self.steady_run(partitions)
        return Throughput(
            {
                "event_rows": EVENT_ROWS,
                "request_rows": settings.request_rows,
                "window_rows": WINDOW_ROWS,
                "backlog_seconds": settings.backlog_seconds,
                "fill_rate": FILL_RATE,
                "warmup_predictions": settings.warmup_predictions,
                "measure_seconds": settings.measure_seconds,
                "steady_seconds": settings.steady_seconds,
                "sample_seconds": settings.sample_seconds,
                "steady_warmup_seconds": settings.steady_warmup_seconds,
                "rate": settings.rate,
            },
            self.pinned,
            top,
            steady,
        )

    # ------------------------------------------------------------ set-up

    def register_model(self) -> None:
        """The profile to MinIO; model `credit` version 1 (a small ONNX) pointing at it."""
        from tests.models import tiny_classifier_onnx  # scikit-learn and skl2onnx: only when needed
        from tests.monitor_data import profile_of, traffic

        endpoint = urlsplit(self.infra["FLYWHEEL_S3_ENDPOINT"])
        minio = Minio(
            endpoint.netloc,
            access_key=self.infra["FLYWHEEL_S3_ACCESS_KEY"],
            secret_key=self.infra["FLYWHEEL_S3_SECRET_KEY"],
            secure=endpoint.scheme == "https",
        )
        bucket = "flywheel"  # the services' default bucket, which the monitor reads profiles from
        key = f"{self.namespace}/reference_profile.json"
        profile = orjson.dumps(profile_of(traffic(5000, seed=1)), option=orjson.OPT_SERIALIZE_NUMPY)
        minio.put_object(bucket, key, BytesIO(profile), len(profile), content_type="application/json")
        self.cleanup.callback(minio.remove_object, bucket, key)
        upload = ("model.onnx", tiny_classifier_onnx(), "application/octet-stream")
        response = httpx.post(
            f"{self.registry_url}/models/{MODEL}/versions",
            files={"model": upload},
            data={"reference_profile_uri": f"s3://{bucket}/{key}"},
            timeout=60.0,
        )
        if response.status_code != 201:
            raise RuntimeError(f"registering {MODEL}: {response.status_code} {response.text}")
        artifact = urlsplit(response.json()["artifact_uri"])
        self.cleanup.callback(minio.remove_object, artifact.netloc, artifact.path.lstrip("/"))

    def start_monitor(self) -> ServerProcess:
        self.monitors += 1
        port = free_port()
        env = (
            os.environ
            | self.infra
            | {
                "FLYWHEEL_DATABASE_URL": self.database_url,
                "FLYWHEEL_MONITOR_PORT": str(port),
                "FLYWHEEL_MONITOR_REGISTRY_URL": self.registry_url,
                "FLYWHEEL_KAFKA_NAMESPACE": self.namespace,
                "FLYWHEEL_LOG_LEVEL": "WARNING",
                "FLYWHEEL_AUTH_ENABLED": "false",  # its routes are read without a token
            }
        )
        pin = ["taskset", "-c", str(MONITOR_CORE)] if self.pinned else []
        log = self.work_dir / f"monitor-{self.monitors}.log"
        monitor = start_server(
            "Flywheel monitor", [*pin, sys.executable, "-m", "services.monitor"], port, env, self.repo, log
        )
        self.cleanup.callback(monitor.stop)
        monitor.wait_until_healthy("/health/ready", READY_SECONDS)
        return monitor

    def producer(self, mode: str, out: Path, *arguments: str) -> subprocess.Popen[bytes]:
        pin = ["taskset", "-c", str(OTHER_CORE)] if self.pinned else []
        command = [*pin, sys.executable, "-m", "bench.drift.producer", mode, str(out)]
        command += ["--bootstrap", self.bootstrap, "--topic", self.topic, "--rows", str(EVENT_ROWS)]
        command += ["--request-rows", str(self.settings.request_rows), *arguments]
        process = subprocess.Popen(command, cwd=self.repo, start_new_session=True)
        self.cleanup.callback(_stop_process, process)
        return process

    def delete_topics(self) -> None:
        deleted = delete_kafka_topics(self.bootstrap, self.namespace)
        print(f"deleted {len(deleted)} topics of {self.namespace}", flush=True)

    # ------------------------------------------------------------ 1. the top rate

    def top_rate(self, partitions: list[int]) -> TopRate:
        settings = self.settings
        events = int(settings.backlog_seconds * FILL_RATE / EVENT_ROWS)
        print(
            f"producing a backlog of {events:,} events ({events * EVENT_ROWS:,} predictions, "
            f"{settings.backlog_seconds:.0f} s at {FILL_RATE:,}/s) into {self.topic}",
            flush=True,
        )
        out = self.work_dir / "fill.json"
        producer = self.producer("fill", out, "--events", str(events))
        if producer.wait() != 0:
            raise RuntimeError(f"the producer exited with {producer.returncode}")
        filled = json.loads(out.read_text())
        print(
            f"  {filled['predictions'] / filled['seconds']:,.0f} predictions/s produced "
            f"({filled['bytes'] / filled['events'] / 1000:.0f} kB an event, {filled['seconds']:.1f} s)",
            flush=True,
        )
        print("starting the monitor on the backlog", flush=True)
        started = time.perf_counter()
        monitor = self.start_monitor()
        top = asyncio.run(self._follow_backlog(monitor, started, events, partitions))
        top.fill_seconds = filled["seconds"]
        top.fill_predictions_per_second = filled["predictions"] / filled["seconds"]
        top.event_bytes = filled["bytes"] / filled["events"]
        top.counted = monitor_counts(monitor.base_url)
        monitor.stop()
        print(
            f"  {top.predictions_per_second:,.0f} predictions/s over {top.measured_seconds:.1f} s "
            f"({'the backlog drained' if top.drained else 'backlog left'})",
            flush=True,
        )
        return top

    async def _follow_backlog(
        self, monitor: ServerProcess, started: float, events: int, partitions: list[int]
    ) -> TopRate:
        settings = self.settings
        progress = GroupProgress(self.bootstrap, self.group, self.topic)
        await progress.start()
        try:
            points: list[tuple[float, int]] = []  # (time, committed events)
            while not (committed := await progress.committed()):
                _check_alive(monitor)
                if time.perf_counter() - started > READY_SECONDS:
                    raise RuntimeError(f"the monitor committed nothing in {READY_SECONDS:.0f}s")
                await asyncio.sleep(POLL_SECONDS / 5)
            first = time.perf_counter()
            points.append((first, committed))
            core = CoreMeter(MONITOR_CORE)
            begin: tuple[float, int, float | None] | None = None
            while True:
                await asyncio.sleep(POLL_SECONDS)
                _check_alive(monitor)
                now, committed = time.perf_counter(), await progress.committed()
                points.append((now, committed))
                if begin is None and (
                    committed * EVENT_ROWS >= settings.warmup_predictions
                    or now - first >= MAX_WARMUP_SECONDS
                    or committed >= events
                ):
                    begin = (now, committed, cpu_seconds(monitor.process.pid))
                    core.share()
                if committed >= events or (begin is not None and now - begin[0] >= settings.measure_seconds):
                    break
            end_cpu = cpu_seconds(monitor.process.pid)
            core_busy = core.share()
            assert begin is not None
            if committed >= events and begin[1] >= events:  # drained in the warm-up: from the first commit
                begin = (first, points[0][1], None)
            seconds = now - begin[0]
            measured = (committed - begin[1]) * EVENT_ROWS
            top = TopRate(
                backlog_predictions=events * EVENT_ROWS,
                fill_seconds=0.0,
                fill_predictions_per_second=0.0,
                event_bytes=0.0,
                to_first_commit_seconds=first - started,
                warmup_seconds=begin[0] - first,
                warmup_predictions=begin[1] * EVENT_ROWS,
                measured_seconds=seconds,
                measured_predictions=measured,
                predictions_per_second=measured / seconds if seconds else 0.0,
                drained=committed >= events,
                monitor_cpu_share=(end_cpu - begin[2]) / seconds
                if end_cpu is not None and begin[2] is not None and seconds
                else None,
                core_busy_share=core_busy,
                slices=_slices([point for point in points if point[0] >= begin[0]]),
            )
            if settings.profile_dir is not None:
                if top.drained:
                    top.profile = ["not profiled: the backlog was drained (produce a larger one)"]
                else:
                    await self._profile(monitor, progress, top, events)
            return top
        finally:
            await progress.close()

    async def _profile(
        self, monitor: ServerProcess, progress: GroupProgress, top: TopRate, events: int
    ) -> None:
        assert self.settings.profile_dir is not None
        self.settings.profile_dir.mkdir(parents=True, exist_ok=True)
        path = self.settings.profile_dir / "monitor.collapsed.txt"
        print(f"  profiling the monitor with py-spy for {self.settings.profile_seconds:.0f} s", flush=True)
        before = (time.perf_counter(), await progress.committed())
        profiler = Profiler(monitor.process.pid, path)
        try:
            deadline = before[0] + self.settings.profile_seconds
            while time.perf_counter() < deadline:
                if await progress.committed() >= events:
                    break
                await asyncio.sleep(POLL_SECONDS)
        finally:
            profiler.stop()
        after = (time.perf_counter(), await progress.committed())
        top.profiled_predictions_per_second = (after[1] - before[1]) * EVENT_ROWS / (after[0] - before[0])
        top.profile = summarize(path, after[0] - before[0]).lines()

    # ------------------------------------------------------------ 2. the steady run

    def steady_run(self, partitions: list[int]) -> SteadyRun:
        settings = self.settings
        print("restarting the monitor at the end of the log", flush=True)
        monitor = self.start_monitor()
        time.sleep(2.0)  # joined its group, settled
        idle = rss_mb(monitor.process.pid)
        print(
            f"steady run: {settings.rate:,} predictions/s for {settings.steady_seconds:.0f} s, sampled every "
            f"{settings.sample_seconds:.0f} s (monitor RSS {idle:.0f} MB before)",
            flush=True,
        )
        out = self.work_dir / "steady.json"
        producer = self.producer(
            "steady", out, "--rate", str(settings.rate), "--seconds", str(settings.steady_seconds)
        )
        samples, drain = asyncio.run(self._sample(monitor, producer, partitions))
        if producer.returncode != 0:
            raise RuntimeError(f"the producer exited with {producer.returncode}")
        run = SteadyRun(
            rate=settings.rate,
            seconds=settings.steady_seconds,
            producer=json.loads(out.read_text()),
            idle_rss_mb=idle,
            samples=samples,
            warmup_seconds=settings.steady_warmup_seconds,
            drain_seconds=drain,
            counted=monitor_counts(monitor.base_url),
        )
        monitor.stop()
        return run

    async def _sample(
        self, monitor: ServerProcess, producer: subprocess.Popen[bytes], partitions: list[int]
    ) -> tuple[list[Sample], float | None]:
        settings = self.settings
        pid = monitor.process.pid
        progress = GroupProgress(self.bootstrap, self.group, self.topic)
        end = LogEnd(self.bootstrap, self.topic)
        await progress.start()
        await end.start(partitions)
        try:
            base_produced, base_committed = await end.records(), await progress.committed()
            started = time.perf_counter()
            core = CoreMeter(MONITOR_CORE)
            last_cpu, last_time = cpu_seconds(pid), started
            samples: list[Sample] = []
            next_sample = started + settings.sample_seconds
            while producer.poll() is None:
                await asyncio.sleep(min(POLL_SECONDS, max(0.0, next_sample - time.perf_counter())))
                _check_alive(monitor)
                now = time.perf_counter()
                if now < next_sample:
                    continue
                next_sample += settings.sample_seconds
                produced, committed = await end.records(), await progress.committed()
                cpu = cpu_seconds(pid)
                samples.append(
                    Sample(
                        seconds=round(now - started, 2),
                        produced=(produced - base_produced) * EVENT_ROWS,
                        committed=(committed - base_committed) * EVENT_ROWS,
                        rss_mb=rss_mb(pid),
                        cpu_share=(cpu - last_cpu) / (now - last_time)
                        if cpu is not None and last_cpu is not None
                        else None,
                        core_busy_share=core.share(),
                    )
                )
                last_cpu, last_time = cpu, now
                print(f"  {_sample_line(samples[-1], settings.rate)}", flush=True)
            stopped = time.perf_counter()
            produced = await end.records()
            while time.perf_counter() - stopped < DRAIN_SECONDS:
                if await progress.committed() >= produced:
                    return samples, time.perf_counter() - stopped
                await asyncio.sleep(POLL_SECONDS)
            return samples, None
        finally:
            await progress.close()
            await end.close()


def monitor_counts(base_url: str) -> dict[str, float]:
    """The monitor's own count of predictions read and windows judged (its /metrics)."""
    response = httpx.get(f"{base_url}/metrics", timeout=10.0)
    response.raise_for_status()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == "flywheel_monitor_predictions_total":
                name = (
                    f"predictions_{'compared' if sample.labels.get('compared') == 'true' else 'uncompared'}"
                )
                counts[name] = counts.get(name, 0.0) + sample.value
            elif sample.name == "flywheel_monitor_windows_total":
                name = f"windows_{sample.labels.get('verdict', '?')}"
                counts[name] = counts.get(name, 0.0) + sample.value
            elif sample.name == "flywheel_monitor_alerts_total":
                counts["alerts"] = counts.get("alerts", 0.0) + sample.value
    return counts


def _sample_line(sample: Sample, rate: int) -> str:
    cpu = "?" if sample.cpu_share is None else f"{sample.cpu_share:.0%}"
    return (
        f"{sample.seconds:>6.0f} s  produced {sample.produced:>10,}  committed {sample.committed:>10,}  "
        f"lag {sample.lag:>8,} ({sample.lag / rate:.1f} s)  RSS {sample.rss_mb:7.1f} MB  CPU {cpu:>4}"
    )


def _slices(points: list[tuple[float, int]]) -> list[float]:
    """Predictions/s over consecutive slices of SLICE_SECONDS (of committed events at `points`)."""
    rates = []
    start = 0
    for index, (now, committed) in enumerate(points):
        then, before = points[start]
        if now - then >= SLICE_SECONDS:
            rates.append((committed - before) * EVENT_ROWS / (now - then))
            start = index
    return rates


def _check_alive(monitor: ServerProcess) -> None:
    if monitor.process.poll() is not None:
        raise RuntimeError(f"the monitor exited with {monitor.process.returncode}:\n{monitor.log_tail()}")


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _partitions(bootstrap: str, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (description,) = await admin.describe_topics([topic])
        return sorted(partition["partition"] for partition in description["partitions"])
    finally:
        await admin.close()


async def _move_group_to_end(bootstrap: str, group: str, topic: str, partitions: list[int]) -> None:
    """Commit the log's end for the (stopped, so empty) consumer group: a restarted monitor reads only
    what is produced from now on."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        assigned = [TopicPartition(topic, partition) for partition in partitions]
        consumer.assign(assigned)
        ends = await consumer.end_offsets(assigned)
        await consumer.commit({partition: offset for partition, offset in ends.items() if offset > 0})
    finally:
        await consumer.stop()
