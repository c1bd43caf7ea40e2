"""Kafka-fed scoring end to end against its two ceilings, measured in the same run on the same records.

    python bench/batch/run.py [--records N | --quick] [--models rf,lr] [--partitions N]
                              [--confluent auto|always|never]
                              [--profile DIR] [--json PATH] [--require-target]

Produces N 20-feature scoring requests into the request topic, then starts the batch service and times
it from its first committed result to its Nth (exactly once, read back and checked); measures
in-process onnxruntime on the same ONNX file at the service's batch size and a raw aiokafka
consume+produce loop with no model (plain, and a transaction per batch like the service); with
confluent-kafka too when the Kafka loop is what limits. Prints every rate, the ratios and whether the
end-to-end rate reaches 70% of the lower ceiling. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # run as a script: make `bench` importable
    sys.path.insert(0, str(REPO_ROOT))

import aiokafka  # noqa: E402
import onnxruntime  # noqa: E402
import orjson  # noqa: E402
import sklearn  # noqa: E402

from bench.batch.ceiling import in_process_rows_per_second, labels  # noqa: E402
from bench.batch.confluent import confluent_kafka_version, confluent_loop  # noqa: E402
from bench.batch.loops import LoopFigure, LoopSpec, aiokafka_loop  # noqa: E402
from bench.batch.profiling import ensure_py_spy, summarize  # noqa: E402
from bench.batch.report import (  # noqa: E402
    TARGET_FRACTION,
    ModelRun,
    TargetCheck,
    check_line,
    cpu_note,
    loop_as_json,
    rates_table,
    run_as_json,
    target_check,
    target_line,
)
from bench.batch.service import (  # noqa: E402
    READY_SECONDS,
    ServiceFigure,
    StreamTopics,
    follow_stream,
    produce_retries,
    start_batch,
    start_registry,
)
from bench.batch.topics import (  # noqa: E402
    GroupProgress,
    ProduceFigure,
    ResultCheck,
    check_results,
    create_topics,
    produce_requests,
)
from bench.batch.workload import HELD_OUT_ROWS, RequestPool, result_headers, result_sized_value  # noqa: E402
from bench.common.cpu import CpuMeter, kafka_broker  # noqa: E402
from bench.common.databases import BenchDatabases  # noqa: E402
from bench.common.infrastructure import delete_kafka_topics, infrastructure_env  # noqa: E402
from bench.common.machine import busy_warning, cpu_busy_fraction, percent, wake_up_cost  # noqa: E402
from bench.serving.ceiling import InProcessFigure  # noqa: E402
from bench.serving.flywheel import delete_artifacts, register_models  # noqa: E402
from bench.serving.workload import MODEL_KINDS, BenchModel, build_models  # noqa: E402
from services.batch.settings import BatchSettings  # noqa: E402

DEFAULT_RECORDS = 1_000_000
QUICK_RECORDS = 100_000
PARTITIONS_PER_WORKER = 3
IN_PROCESS_SECONDS = 3.0
QUICK_IN_PROCESS_SECONDS = 1.0
SMALL_BATCH_ROWS = 500
CONFLUENT_CHOICES = ("auto", "always", "never")


@dataclass(frozen=True)
class Settings:
    records: int
    models: list[str]
    max_batch_records: int  # the service's FLYWHEEL_BATCH_MAX_BATCH_RECORDS, and the loops' batches
    intra_op_threads: int  # the in-process ceiling's: FLYWHEEL_BATCH_INTRA_OP_THREADS, else every core
    workers: int  # the service's FLYWHEEL_BATCH_WORKERS
    partitions: int  # FLYWHEEL_KAFKA_TOPIC_PARTITIONS: every topic of the run
    in_process_seconds: float
    confluent: str
    profile_dir: Path | None

    @property
    def batch_sizes(self) -> list[int]:
        return sorted({self.max_batch_records, SMALL_BATCH_ROWS}, reverse=True)


@dataclass
class Measured:
    runs: list[ModelRun]
    loops: list[LoopFigure]
    checks: list[TargetCheck]
    profiles: dict[str, list[str]]  # summary lines by model


def positive_int(text: str) -> int:
    value = int(text.replace("_", "").replace(",", ""))
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {value}")
    return value


def model_list(text: str) -> list[str]:
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in chosen if name not in MODEL_KINDS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"expected some of {','.join(MODEL_KINDS)}, got {text!r}")
    return [name for name in MODEL_KINDS if name in chosen]


def parse_arguments(argv: list[str]) -> tuple[argparse.Namespace, Settings]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--records", type=positive_int, help=f"requests to produce and score (default {DEFAULT_RECORDS:,})"
    )
    parser.add_argument("--quick", action="store_true", help=f"a smoke run: {QUICK_RECORDS:,} records")
    parser.add_argument(
        "--models", type=model_list, default=["rf"], help="rf (random forest, the default), lr, or rf,lr"
    )
    parser.add_argument(
        "--max-batch-records",
        type=positive_int,
        help="the service's FLYWHEEL_BATCH_MAX_BATCH_RECORDS (default: the service's own default)",
    )
    parser.add_argument(
        "--confluent",
        choices=CONFLUENT_CHOICES,
        default="auto",
        help="measure the raw loop with confluent-kafka too: auto (when the target is missed and the Kafka "
        "loop is the lower ceiling), always or never",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample the batch service with py-spy while it streams; collapsed stacks into DIR and a "
        "summary printed (the sampling costs the service some CPU)",
    )
    parser.add_argument(
        "--partitions",
        type=positive_int,
        help="partitions of every topic of the run (default: 3 a service worker, so that the workers, "
        "which share them out through the consumer group, get equal shares)",
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument("--require-target", action="store_true", help="exit 1 when a target is missed")
    arguments = parser.parse_args(argv)
    service = BatchSettings()  # what the service would read from this environment
    settings = Settings(
        records=arguments.records or (QUICK_RECORDS if arguments.quick else DEFAULT_RECORDS),
        models=arguments.models,
        max_batch_records=arguments.max_batch_records or service.max_batch_records,
        intra_op_threads=service.intra_op_threads or os.cpu_count() or 1,
        workers=service.workers,
        partitions=arguments.partitions or PARTITIONS_PER_WORKER * service.workers,
        in_process_seconds=QUICK_IN_PROCESS_SECONDS if arguments.quick else IN_PROCESS_SECONDS,
        confluent=arguments.confluent,
        profile_dir=arguments.profile,
    )
    return arguments, settings


def stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so the servers are stopped, the topics and database deleted."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


class Bench:
    """One run: what it started and created is handed to `cleanup`, which stops and deletes it again."""

    def __init__(self, settings: Settings, infra: dict[str, str], work_dir: Path, cleanup: ExitStack) -> None:
        self.settings = settings
        self.infra = infra
        self.bootstrap = infra["FLYWHEEL_KAFKA_BOOTSTRAP"]
        self.work_dir = work_dir
        self.cleanup = cleanup
        self.suffix = secrets.token_hex(4)
        self.namespace = f"bench-{self.suffix}"
        self.broker_pid, _ = kafka_broker()
        self.pool = RequestPool()

    def topic(self, name: str) -> str:
        """A topic's (or group's) name on the cluster: in the run's namespace, deleted at the end."""
        return f"{self.namespace}.{name}"

    def measure(self) -> Measured:
        settings = self.settings
        model_dir = self.work_dir / "models"
        model_dir.mkdir()
        print(f"training {', '.join(settings.models)} and converting to ONNX", flush=True)
        models = build_models(settings.models, HELD_OUT_ROWS, model_dir)
        in_process = {model.name: self.measure_in_process(model) for model in models}

        databases = BenchDatabases(self.infra["FLYWHEEL_DATABASE_URL"], self.suffix, ("flywheel",))
        print(f"creating database {databases.name('flywheel')}; Kafka namespace {self.namespace}", flush=True)
        databases.create()
        self.cleanup.callback(databases.drop)
        self.cleanup.callback(self.delete_topics)
        registry = start_registry(
            REPO_ROOT, self.infra, databases.url("flywheel"), self.namespace, self.work_dir
        )
        self.cleanup.callback(registry.stop)
        registry.wait_until_healthy("/health/ready", READY_SECONDS)
        uris = register_models(registry.base_url, models)
        self.cleanup.callback(delete_artifacts, self.infra, uris)

        produced = {model.name: self.produce(model.name) for model in models}
        source = self.topic(StreamTopics(models[0].name).requests)
        loops = [
            self.run_loop("aiokafka", transactional, batches, source, models[0].name, asyncio_loop)
            for transactional in (False, True)
            for batches in (False, True)
        ]
        runs: list[ModelRun] = []
        profiles: dict[str, list[str]] = {}
        for model in models:
            service = self.stream(model, databases.url("flywheel"), registry.base_url)
            check = self.check(model)
            if settings.profile_dir is not None:
                summary = summarize(self.profile_path(model.name), service.first_to_done_seconds)
                profiles[model.name] = summary.lines()
            runs.append(
                ModelRun(
                    model.name, model.kind.title, in_process[model.name], produced[model.name], service, check
                )
            )
        checks = [target_check(run, loops, settings.max_batch_records) for run in runs]
        if self.wants_confluent(checks):
            version = confluent_kafka_version()
            print(f"confluent-kafka {version}", flush=True)
            loops += [
                self.run_loop("confluent-kafka", transactional, False, source, models[0].name, confluent_loop)
                for transactional in (False, True)
            ]
        for model in models:  # the ceiling when others' work weighs on it least: the better of two
            again = self.measure_in_process(model)
            in_process[model.name] = {
                rows: max(figure, again[rows], key=lambda f: f.rows_per_second)
                for rows, figure in in_process[model.name].items()
            }
        runs = [dataclasses.replace(run, in_process=in_process[run.model]) for run in runs]
        checks = [target_check(run, loops, settings.max_batch_records) for run in runs]
        return Measured(runs, loops, checks, profiles)

    def measure_in_process(self, model: BenchModel) -> dict[int, InProcessFigure]:
        figures = {
            rows: in_process_rows_per_second(
                model.onnx_path,
                self.pool.batch(rows),
                self.settings.intra_op_threads,
                self.settings.in_process_seconds,
            )
            for rows in self.settings.batch_sizes
        }
        print(
            f"  {model.name}: in-process onnxruntime "
            + ", ".join(f"{rows:,}-row calls {f.rows_per_second:,.0f} rows/s" for rows, f in figures.items()),
            flush=True,
        )
        return figures

    def produce(self, model: str) -> ProduceFigure:
        topic = self.topic(StreamTopics(model).requests)
        print(f"producing {self.settings.records:,} requests for {model} into {topic}", flush=True)
        asyncio.run(create_topics(self.bootstrap, [topic], self.settings.partitions))
        figure = asyncio.run(
            produce_requests(
                self.bootstrap,
                topic,
                self.pool.records(self.settings.records, model),
                self.settings.partitions,
            )
        )
        print(
            f"  {figure.rows_per_second:,.0f} rows/s ({figure.bytes / figure.records:.0f} bytes a record, "
            f"{figure.seconds:.1f} s)",
            flush=True,
        )
        return figure

    def run_loop(
        self,
        client: str,
        transactional: bool,
        batches: bool,
        source: str,
        model: str,
        run: Callable[[LoopSpec], LoopFigure],
    ) -> LoopFigure:
        mode = "transactional" if transactional else "plain"
        how = " (record batches)" if batches else ""
        name = f"loop-{client}-{mode}{'-batches' if batches else ''}"
        sink = self.topic(f"{name}-results")
        asyncio.run(create_topics(self.bootstrap, [sink], self.settings.partitions))
        spec = LoopSpec(
            bootstrap=self.bootstrap,
            source=source,
            sink=sink,
            sink_partitions=self.settings.partitions,
            group=self.topic(name),
            records=self.settings.records,
            max_records=self.settings.max_batch_records,
            value=result_sized_value(model, StreamTopics(model).requests),
            headers=result_headers(StreamTopics(model).requests),
            transactional_id=self.topic(name) if transactional else None,
            batches=batches,
        )
        print(f"Kafka loop without a model: {client}, {mode}{how}", flush=True)
        meter = CpuMeter(self.processes())
        meter.start()
        figure = run(spec)
        figure = dataclasses.replace(figure, cpu=meter.stop())
        print(f"  {figure.rows_per_second:,.0f} rows/s ({figure.seconds:.1f} s, {figure.batches} batches)")
        return figure

    def stream(self, model: BenchModel, database_url: str, registry_url: str) -> ServiceFigure:
        topics = StreamTopics(model.name)
        log_dir = self.work_dir / f"batch-{model.name}"
        log_dir.mkdir()
        print(f"the batch service on {self.settings.records:,} requests for {model.name}", flush=True)
        started = time.perf_counter()
        service = start_batch(
            REPO_ROOT,
            self.infra,
            database_url=database_url,
            registry_url=registry_url,
            namespace=self.namespace,
            topics=topics,
            partitions=self.settings.partitions,
            max_batch_records=self.settings.max_batch_records,
            log_dir=log_dir,
        )
        self.cleanup.callback(service.stop)
        meter = CpuMeter(self.processes() | {"service": service.process.pid}, trees=frozenset({"service"}))
        profile = None if self.settings.profile_dir is None else self.profile_path(model.name)
        progress = GroupProgress(
            self.bootstrap, self.topic(topics.consumer_group), self.topic(topics.requests)
        )

        async def follow() -> ServiceFigure:
            await progress.start()
            try:
                return await follow_stream(
                    model.name, service, started, progress, self.settings.records, meter, profile
                )
            finally:
                await progress.close()

        figure = asyncio.run(follow())
        service.stop()
        figure = dataclasses.replace(figure, produce_retries=produce_retries(service.log_path))
        print(
            f"  {figure.rows_per_second:,.0f} rows/s from the first result ({figure.to_first_seconds:.1f} s "
            f"after the start) to the last ({figure.first_to_done_seconds:.1f} s later); "
            f"{figure.rows_per_second_from_start:,.0f} rows/s from the start",
            flush=True,
        )
        return figure

    def check(self, model: BenchModel) -> ResultCheck:
        topic = self.topic(StreamTopics(model.name).results)
        print(f"  reading {topic} back (read_committed)", flush=True)
        pool_labels = labels(model.onnx_path, self.pool.rows)
        return asyncio.run(
            check_results(self.bootstrap, topic, self.settings.partitions, self.settings.records, pool_labels)
        )

    def wants_confluent(self, checks: list[TargetCheck]) -> bool:
        if self.settings.confluent != "auto":
            return self.settings.confluent == "always"
        return any(not check.passed and check.limit == "the Kafka loop" for check in checks)

    def processes(self) -> dict[str, int]:
        pids = {"bench": os.getpid()}
        if self.broker_pid is not None:
            pids["broker"] = self.broker_pid
        return pids

    def profile_path(self, model: str) -> Path:
        assert self.settings.profile_dir is not None
        return self.settings.profile_dir / f"batch-{model}.collapsed.txt"

    def delete_topics(self) -> None:
        deleted = delete_kafka_topics(self.bootstrap, self.namespace)
        print(f"deleted {len(deleted)} topics of {self.namespace}", flush=True)


def asyncio_loop(spec: LoopSpec) -> LoopFigure:
    return asyncio.run(aiokafka_loop(spec))


def print_report(settings: Settings, measured: Measured) -> None:
    print()
    print(
        f"{settings.records:,} requests of 20 features, {settings.partitions} partitions a topic, "
        f"batches of up to {settings.max_batch_records:,} records; the service in {settings.workers} "
        f"worker processes; in process, onnxruntime with {settings.intra_op_threads} intra-op threads"
    )
    for run in measured.runs:
        print()
        print(f"{run.title} [{run.model}]")
        print(rates_table(run, measured.loops, settings.max_batch_records, settings.intra_op_threads))
        print(cpu_note(run))
        if run.model in measured.profiles:
            print(f"{run.model}: where the batch service's time goes (py-spy, first result to last):")
            for line in measured.profiles[run.model]:
                print(f"  {line}")
    print()
    for run, check in zip(measured.runs, measured.checks, strict=True):
        print(target_line(check))
        print(check_line(run))


def targets_met(measured: Measured) -> bool:
    return all(check.passed for check in measured.checks) and all(run.check.passed for run in measured.runs)


def write_json(
    path: Path, settings: Settings, measured: Measured, versions: dict[str, str], busy_at_start: float | None
) -> None:
    document = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cores": os.cpu_count(), "busy_at_start": busy_at_start} | versions,
        "settings": {
            "records": settings.records,
            "models": settings.models,
            "max_batch_records": settings.max_batch_records,
            "intra_op_threads": settings.intra_op_threads,
            "workers": settings.workers,
            "partitions": settings.partitions,
            "in_process_seconds": settings.in_process_seconds,
            "target_fraction": TARGET_FRACTION,
        },
        "loops": [loop_as_json(loop) for loop in measured.loops],
        "models": [run_as_json(run, measured.loops, settings.max_batch_records) for run in measured.runs],
        "profiles": measured.profiles,
        "targets_met": targets_met(measured),
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


def source_version() -> str:
    """The commit measured, and whether the service's code differed from it in the work tree."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True
    ).stdout.strip()
    changed = subprocess.run(
        ["git", "status", "--porcelain", "--", "services", "shared"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return f"{commit or 'unknown'}{' with uncommitted changes in services/ or shared/' if changed else ''}"


def main(argv: list[str]) -> int:
    arguments, settings = parse_arguments(argv)
    started = time.monotonic()
    busy_at_start = cpu_busy_fraction()
    wake_up = wake_up_cost()
    stop_on_sigterm()
    if settings.profile_dir is not None:
        settings.profile_dir.mkdir(parents=True, exist_ok=True)
        ensure_py_spy()
    infra = infrastructure_env(REPO_ROOT)
    with ExitStack() as cleanup:
        work_dir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="flywheel-bench-batch-")))
        measured = Bench(settings, infra, work_dir, cleanup).measure()
    versions = {
        "commit": source_version(),
        "python": platform.python_version(),
        "kafka": kafka_broker()[1],
        "aiokafka": aiokafka.__version__,
        "onnxruntime": onnxruntime.__version__,
        "scikit-learn": sklearn.__version__,
        "orjson": orjson.__version__,
    }
    if any(loop.client == "confluent-kafka" for loop in measured.loops):
        versions["confluent-kafka"] = confluent_kafka_version()
    print_report(settings, measured)
    if busy := busy_warning(busy_at_start, "nothing is measured in turns here"):
        print(busy)
    print(
        f"machine: {os.cpu_count()} cores ({percent(busy_at_start)} CPU busy at start"
        + (f"; {wake_up.text()}" if wake_up else "")
        + "), "
        + ", ".join(f"{name} {version}" for name, version in versions.items())
        + f"; the benchmark took {time.monotonic() - started:.0f}s"
    )
    if arguments.json:
        write_json(arguments.json, settings, measured, versions, busy_at_start)
        print(f"figures written to {arguments.json}")
    return 1 if arguments.require_target and not targets_met(measured) else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        print(
            "interrupted: the servers are stopped, the topics and the bench database deleted", file=sys.stderr
        )
        sys.exit(130)
