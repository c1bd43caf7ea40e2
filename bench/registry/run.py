"""Flywheel's registry against an MLflow tracking server, side by side on the same PostgreSQL.

    python bench/registry/run.py [--runs N | --quick] [--require-target]

Logs the same runs into both servers (per run: create, one log-batch of 10 params and 100 metric
points, finish), then times the same filtered, ordered search on a 300-run experiment, and prints
both figures, their ratio and whether Flywheel is 10x faster. See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import signal
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from types import FrameType

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # run as a script: make `bench` importable
    sys.path.insert(0, str(REPO_ROOT))

from bench.common.databases import BenchDatabases  # noqa: E402
from bench.common.infrastructure import delete_kafka_topics, infrastructure_env  # noqa: E402
from bench.common.machine import busy_warning, cpu_busy_fraction, percent, wake_up_cost  # noqa: E402
from bench.common.mlflow_install import ensure_mlflow  # noqa: E402
from bench.registry.clients import FlywheelClient, MlflowClient, TrackingClient  # noqa: E402
from bench.registry.cpu import ServerCpu, wait_until_idle  # noqa: E402
from bench.registry.measure import LOGGING_BLOCK_RUNS, Target, log_runs, time_searches  # noqa: E402
from bench.registry.report import (  # noqa: E402
    Comparison,
    ServerFigures,
    issue_reference,
    latency_table,
    search_agreement,
    summary_table,
)
from bench.registry.servers import (  # noqa: E402
    FLYWHEEL_READY_SECONDS,
    MLFLOW_READY_SECONDS,
    start_flywheel,
    start_mlflow,
)
from bench.registry.workload import expected_search_hits, make_runs  # noqa: E402

MLFLOW_VENV = REPO_ROOT / "bench" / ".venv-mlflow"
MLFLOW_REQUIREMENTS = REPO_ROOT / "bench" / "common" / "requirements-mlflow.txt"
QUICK_RUNS = 100
DEFAULT_RUNS = 1000
SEARCH_EXPERIMENT_RUNS = 300
SEED = 20261123
# How long to wait for both servers to go idle once they answer (MLflow's job consumers start after it does).
IDLE_WAIT_SECONDS = 120.0


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a count of at least 1, got {value}")
    return value


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--runs", type=positive_int, default=DEFAULT_RUNS, help="runs to log per server (default 1000)"
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"a smoke check: {QUICK_RUNS} runs, and {QUICK_RUNS} to search"
    )
    parser.add_argument(
        "--search-runs",
        type=positive_int,
        default=SEARCH_EXPERIMENT_RUNS,
        help="runs in the experiment the search reads (default 300)",
    )
    parser.add_argument("--require-target", action="store_true", help="exit 1 when a 10x target is missed")
    arguments = parser.parse_args(argv)
    if arguments.quick:
        arguments.runs = arguments.search_runs = QUICK_RUNS
    return arguments


def stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so the servers are stopped and the databases dropped either way."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def measure(arguments: argparse.Namespace, infra: dict[str, str]) -> tuple[Comparison, str]:
    """Start both servers on fresh databases, measure them, and always clean up: the figures and
    PostgreSQL's version."""
    suffix = secrets.token_hex(4)
    namespace = f"bench-{suffix}"
    databases = BenchDatabases(infra["FLYWHEEL_DATABASE_URL"], suffix, ("flywheel", "mlflow"))
    with ExitStack() as cleanup:
        work_dir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="flywheel-bench-")))
        print(f"creating databases {' and '.join(databases.names.values())}", flush=True)
        databases.create()
        cleanup.callback(databases.drop)
        cleanup.callback(delete_kafka_topics, infra["FLYWHEEL_KAFKA_BOOTSTRAP"], namespace)
        artifact_dir = work_dir / "mlflow-artifacts"
        artifact_dir.mkdir()
        flywheel_server = start_flywheel(REPO_ROOT, infra, databases.url("flywheel"), namespace, work_dir)
        cleanup.callback(flywheel_server.stop)
        mlflow_server = start_mlflow(MLFLOW_VENV, databases.url("mlflow"), artifact_dir, work_dir)
        cleanup.callback(mlflow_server.stop)
        print("waiting for both servers (MLflow migrates its schema first)", flush=True)
        flywheel_server.wait_until_healthy("/health/ready", FLYWHEEL_READY_SECONDS)
        mlflow_server.wait_until_healthy("/health", MLFLOW_READY_SECONDS)

        clients: list[TrackingClient] = [
            MlflowClient(mlflow_server.base_url),
            FlywheelClient(flywheel_server.base_url),
        ]
        for client in clients:
            cleanup.callback(client.close)
        admin_url = infra["FLYWHEEL_DATABASE_URL"]
        cpu = [
            ServerCpu(mlflow_server.process.pid, admin_url, databases.name("mlflow")),
            ServerCpu(flywheel_server.process.pid, admin_url, databases.name("flywheel")),
        ]
        print("waiting for both servers to finish starting (MLflow's job consumers)", flush=True)
        if not wait_until_idle(cpu, timeout_seconds=IDLE_WAIT_SECONDS):
            print(f"WARNING: a server was still busy after {IDLE_WAIT_SECONDS:.0f} s; measuring anyway")
        print(f"logging {arguments.runs} runs into each, {LOGGING_BLOCK_RUNS} at a time in turns", flush=True)
        logging_targets = [
            Target(client, client.create_experiment("bench-logging"), server.seconds)
            for client, server in zip(clients, cpu, strict=True)
        ]
        mlflow_logging, flywheel_logging = log_runs(logging_targets, make_runs(arguments.runs, SEED))
        print(f"logging {arguments.search_runs} runs into each search experiment", flush=True)
        search_targets = [
            Target(client, client.create_experiment("bench-search"), server.seconds)
            for client, server in zip(clients, cpu, strict=True)
        ]
        log_runs(search_targets, make_runs(arguments.search_runs, SEED + 1))
        databases.analyze()
        print("searching", flush=True)
        mlflow_search, flywheel_search = time_searches(search_targets)
        comparison = Comparison(
            mlflow=ServerFigures(mlflow_logging, mlflow_search),
            flywheel=ServerFigures(flywheel_logging, flywheel_search),
        )
        return comparison, databases.server_version()


def print_report(
    arguments: argparse.Namespace, comparison: Comparison, mlflow_version: str, postgres_version: str
) -> None:
    print()
    print(
        f"{arguments.runs} runs x (create, log-batch of 110 values, finish) per server; "
        f"search over {arguments.search_runs} runs; one sequential client each"
    )
    print(summary_table(comparison, mlflow_version))
    print(issue_reference())
    print()
    print(latency_table(comparison))
    print()
    expected = expected_search_hits(make_runs(arguments.search_runs, SEED + 1))
    for warning in search_agreement(expected, comparison):
        print(warning)
    print(
        f"search hits: MLflow {len(comparison.mlflow.search.aucs)}, "
        f"Flywheel {len(comparison.flywheel.search.aucs)} (the workload implies {len(expected)})"
    )


def main(argv: list[str]) -> int:
    arguments = parse_arguments(argv)
    started = time.monotonic()
    busy_at_start = cpu_busy_fraction()
    wake_up = wake_up_cost()
    stop_on_sigterm()
    mlflow_version = ensure_mlflow(MLFLOW_VENV, MLFLOW_REQUIREMENTS)
    comparison, postgres_version = measure(arguments, infrastructure_env(REPO_ROOT))
    print_report(arguments, comparison, mlflow_version, postgres_version)
    if busy := busy_warning(busy_at_start, "both servers were measured in turns"):
        print(busy)
    print(
        f"machine: {os.cpu_count()} cores ({percent(busy_at_start)} CPU busy at start"
        + (f"; {wake_up.text()}" if wake_up else "")
        + "), "
        f"Python {platform.python_version()}, MLflow {mlflow_version}, PostgreSQL {postgres_version}; "
        f"the benchmark took {time.monotonic() - started:.0f}s"
    )
    return 1 if arguments.require_target and not comparison.targets_met else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        print("interrupted: the servers are stopped and the bench databases dropped", file=sys.stderr)
        sys.exit(130)
