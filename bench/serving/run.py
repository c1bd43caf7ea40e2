"""Flywheel's serving against `mlflow models serve`, a hand-built FastAPI + onnxruntime app and a bare ASGI
app, side by side on the same scikit-learn models, loaded by the same HTTP load generator.

    python bench/serving/run.py [--quick] [--duration S] [--concurrencies 1,16,64] [--servers ...]
                                [--models rf,lr] [--json PATH] [--require-target]

Prints requests/s, rows/s, p50 and p99 of every server for 1-row requests at several concurrencies and
100-row requests, with the ratios to the hand-built app and to MLflow, the ceilings (in-process
onnxruntime, the bare ASGI app) and the issue's targets for Flywheel with PASS or MISS. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # run as a script: make `bench` importable
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import onnxruntime  # noqa: E402
import sklearn  # noqa: E402

from bench.common.infrastructure import infrastructure_env  # noqa: E402
from bench.common.machine import busy_warning, cpu_busy_fraction, percent, wake_up_cost  # noqa: E402
from bench.common.mlflow_install import ensure_mlflow  # noqa: E402
from bench.serving.ceiling import InProcessCeiling, intra_op_threads  # noqa: E402
from bench.serving.flywheel import CellLog, PredictionLogWatch, count_logged_predictions  # noqa: E402
from bench.serving.lineup import Bodies, Lineup  # noqa: E402
from bench.serving.loadgen import OHA_VERSION, ensure_oha  # noqa: E402
from bench.serving.measure import Cell, CellResult, label_agreement, run_cells  # noqa: E402
from bench.serving.report import (  # noqa: E402
    ISSUE_REFERENCE,
    SERVER_TITLES,
    TARGET_MODEL,
    PredictionLogCheck,
    TargetCheck,
    as_json,
    beyond_ceiling,
    check_as_json,
    cpu_note,
    in_process_line,
    model_table,
    prediction_log_line,
    prediction_log_note,
    target_checks,
    targets_table,
    workers_note,
)
from bench.serving.servers import uvicorn_speedups, worker_processes  # noqa: E402
from bench.serving.workload import (  # noqa: E402
    MODEL_KINDS,
    BenchModel,
    build_models,
    instances_body,
    load_rows,
    mlflow_inputs_body,
)

MLFLOW_VENV = REPO_ROOT / "bench" / ".venv-mlflow"
MLFLOW_REQUIREMENTS = REPO_ROOT / "bench" / "common" / "requirements-mlflow.txt"
SERVERS = ["mlflow", "handbuilt", "flywheel", "bare"]


@dataclass(frozen=True)
class Settings:
    duration: float
    warm_up: float
    in_process_seconds: float
    concurrencies: list[int]
    batch_rows: int
    batch_concurrencies: list[int]
    servers: list[str]
    models: list[str]
    workers: int

    @property
    def cells(self) -> list[Cell]:
        return [Cell(1, c) for c in self.concurrencies] + [
            Cell(self.batch_rows, c) for c in self.batch_concurrencies
        ]


FULL = Settings(10.0, 2.0, 3.0, [1, 16, 64], 100, [16], SERVERS, ["rf", "lr"], 2)
QUICK = Settings(3.0, 1.0, 1.0, [64], 100, [16], [s for s in SERVERS if s != "mlflow"], ["rf"], 2)


@dataclass
class Measured:
    results: list[CellResult]
    ceiling: InProcessCeiling
    agreement: dict[tuple[str, str], int | None]
    workers: dict[str, int]
    prediction_logs: dict[tuple[str, Cell], CellLog]
    log_checks: dict[str, PredictionLogCheck]  # by model; none when Flywheel did not run


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got {value}")
    return value


def int_list(text: str) -> list[int]:
    return [positive_int(part) for part in text.split(",") if part.strip()]


def choices_list(allowed: list[str]) -> Any:
    def parse(text: str) -> list[str]:
        chosen = [part.strip() for part in text.split(",") if part.strip()]
        unknown = [name for name in chosen if name not in allowed]
        if unknown or not chosen:
            raise argparse.ArgumentTypeError(f"expected some of {','.join(allowed)}, got {text!r}")
        return [name for name in allowed if name in chosen]  # the report's order

    return parse


def parse_arguments(argv: list[str]) -> tuple[argparse.Namespace, Settings]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 3 s per cell, 1 row at c=64 and 100 rows at c=16, random forest only, "
        "no MLflow unless --servers names it",
    )
    parser.add_argument("--duration", type=positive_float, help="seconds measured per cell (default 10)")
    parser.add_argument("--warm-up", type=positive_float, help="seconds of load before each cell (default 2)")
    parser.add_argument(
        "--concurrencies", type=int_list, help="connections for 1-row cells (default 1,16,64)"
    )
    parser.add_argument("--batch-rows", type=positive_int, help="rows per batch request (default 100)")
    parser.add_argument(
        "--batch-concurrencies", type=int_list, help="connections for batch cells (default 16)"
    )
    parser.add_argument(
        "--servers", type=choices_list(SERVERS), help=f"some of {','.join(SERVERS)} (default all)"
    )
    parser.add_argument(
        "--models", type=choices_list(list(MODEL_KINDS)), help="rf (random forest), lr (logistic regression)"
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        help="uvicorn workers of every server, Flywheel's FLYWHEEL_SERVING_WORKERS included (default 2)",
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument("--require-target", action="store_true", help="exit 1 when a target is missed")
    arguments = parser.parse_args(argv)
    base = QUICK if arguments.quick else FULL
    settings = Settings(
        duration=arguments.duration or base.duration,
        warm_up=arguments.warm_up or base.warm_up,
        in_process_seconds=base.in_process_seconds,
        concurrencies=arguments.concurrencies or base.concurrencies,
        batch_rows=arguments.batch_rows or base.batch_rows,
        batch_concurrencies=arguments.batch_concurrencies or base.batch_concurrencies,
        servers=arguments.servers or base.servers,
        models=arguments.models or base.models,
        workers=arguments.workers or base.workers,
    )
    return arguments, settings


def stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so the servers are stopped and the database dropped either way."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def write_bodies(
    models: list[BenchModel], row_counts: list[int], rows: np.ndarray, directory: Path
) -> Bodies:
    """The request bodies as files for the load generator, by format and rows per request: one body a
    line (the load picks a line at random for each request), the first of the held-out rows (the
    agreement check reads it), then `rows` in consecutive slices."""
    held_out = models[0].rows  # every model gets the same held-out rows
    bodies: Bodies = {"instances": {}, "inputs": {}}
    for count in row_counts:
        slices = [held_out[:count]] + [rows[start : start + count] for start in range(0, len(rows), count)]
        for form, encode in (("instances", instances_body), ("inputs", mlflow_inputs_body)):
            path = directory / f"{form}-{count}.jsonl"
            path.write_bytes(b"\n".join(encode(part) for part in slices if len(part) == count) + b"\n")
            bodies[form][count] = path
    return bodies


def measure(settings: Settings, infra: dict[str, str], work_dir: Path, cleanup: ExitStack) -> Measured:
    """Train, start every server, measure every cell; `cleanup` stops and deletes what was started."""
    model_dir = work_dir / "models"
    model_dir.mkdir()
    print(f"training {', '.join(settings.models)} and converting to ONNX", flush=True)
    models = build_models(settings.models, settings.batch_rows, model_dir)
    distinct_rows = load_rows()
    bodies = write_bodies(models, sorted({cell.rows for cell in settings.cells}), distinct_rows, work_dir)
    ceiling = InProcessCeiling(models, distinct_rows, settings.in_process_seconds)
    for model in models:
        for rows in (1, settings.batch_rows):
            ceiling.sample(model.name, rows)
        print(f"{model.name}: " + in_process_line(ceiling.best(model.name), intra_op_threads()), flush=True)

    lineup = Lineup(REPO_ROOT, infra, MLFLOW_VENV, settings.workers, work_dir, cleanup)
    for server in settings.servers:
        lineup.start(server, models, bodies)
    lineup.wait_until_ready(models)
    agreement = {
        (server, model.name): label_agreement(
            server, lineup.endpoints[server, model.name], model, settings.batch_rows
        )
        for server in settings.servers
        for model in models
    }

    print(
        f"measuring {len(settings.cells)} cells x {len(settings.servers)} servers x {len(models)} models, "
        f"{settings.warm_up:g} s warm-up + {settings.duration:g} s each, servers in turns",
        flush=True,
    )
    prediction_logs: dict[tuple[str, Cell], CellLog] = {}
    watch = (
        PredictionLogWatch(lineup.processes["flywheel"][0].base_url)
        if "flywheel" in lineup.processes
        else None
    )

    def before_cell(model: str, cell: Cell) -> None:
        ceiling.sample(model, cell.rows)

    def after_turn(result: CellResult) -> None:
        log = None
        if watch is not None and result.server == "flywheel":
            log = prediction_logs[result.model, result.cell] = watch.after_cell()
        print_progress(result, log)

    results = run_cells(
        lineup.endpoints,
        settings.servers,
        settings.models,
        settings.cells,
        settings.duration,
        settings.warm_up,
        before_cell,
        after_turn,
    )
    workers = {server: worker_processes(started[0]) for server, started in lineup.processes.items()}
    log_checks: dict[str, PredictionLogCheck] = {}
    if "flywheel" in lineup.processes:
        lineup.processes["flywheel"][0].stop()  # serving flushes its prediction log on the way out
        logged = count_logged_predictions(infra["FLYWHEEL_KAFKA_BOOTSTRAP"], lineup.namespace)
        for name in settings.models:
            answered = sum(r.answered_rows for r in results if (r.server, r.model) == ("flywheel", name))
            answered += settings.batch_rows  # the agreement check
            log_checks[name] = PredictionLogCheck(name, answered=answered, logged=logged.get(name, 0))
    for server, started in lineup.processes.items():
        if any(r.load.failed or r.warm_up.failed for r in results if r.server == server):
            for process in started:
                print(f"\n{process.name} had failures; the end of its log:\n{process.log_tail(20)}")
    return Measured(results, ceiling, agreement, workers, prediction_logs, log_checks)


def print_progress(result: CellResult, log: CellLog | None) -> None:
    load = result.load
    p50 = "-" if load.p50_ms is None else f"{load.p50_ms:.2f}"
    p99 = "-" if load.p99_ms is None else f"{load.p99_ms:.2f}"
    failed = f", {load.failed} FAILED {load.statuses} {load.errors}" if load.failed else ""
    print(
        f"  {result.model} {result.cell.label:<15} {SERVER_TITLES[result.server]:<15} "
        f"{result.requests_per_second:>9,.0f} req/s {result.rows_per_second:>10,.0f} rows/s  "
        f"p50 {p50} ms  p99 {p99} ms  CPU {cpu_note(result)} µs/req (cores {workers_note(result)}){failed}"
        + ("" if log is None else f"; {prediction_log_note(log)}"),
        flush=True,
    )


def print_report(settings: Settings, measured: Measured, versions: dict[str, str]) -> list[TargetCheck]:
    print()
    workers = f"{settings.workers} uvicorn worker{'' if settings.workers == 1 else 's'}"
    print(
        f"{settings.duration:g} s per cell after {settings.warm_up:g} s of warm-up; every server with "
        f"{workers} ({versions['uvicorn']}); oha {OHA_VERSION} on the same cores"
    )
    for model in settings.models:
        print()
        print(f"{MODEL_KINDS[model].title} [{model}], 20 features")
        print(model_table(model, measured.results, settings.servers, settings.cells))
        print(
            in_process_line(measured.ceiling.best(model), intra_op_threads(), measured.ceiling.worst(model))
        )
        for warning in beyond_ceiling(model, measured.results, measured.ceiling.best(model)):
            print(warning)
        if model in measured.log_checks:
            print(prediction_log_line(model, settings.cells, measured.prediction_logs))
            check = measured.log_checks[model]
            print(f"Flywheel's predictions in Kafka: {check.logged:,} of {check.answered:,} answered rows")
        agreement = [
            f"{SERVER_TITLES[server]} {agreed}/{settings.batch_rows}"
            for (server, name), agreed in measured.agreement.items()
            if name == model and agreed is not None
        ]
        print(
            f"labels agreeing with scikit-learn on a {settings.batch_rows}-row request: "
            + ", ".join(agreement)
        )

    print()
    bare = [r for r in measured.results if r.server == "bare" and r.cell.rows == 1]
    if bare:
        best = max(bare, key=lambda r: r.requests_per_second)
        print(
            f"the Python HTTP ceiling (bare ASGI, 1 row): {best.requests_per_second:,.0f} req/s "
            f"at c={best.cell.concurrency} ({best.model})"
        )
    print(ISSUE_REFERENCE)
    print(
        "worker processes serving: "
        + ", ".join(f"{SERVER_TITLES[server]} {count}" for server, count in measured.workers.items())
    )
    checks = target_checks(
        TARGET_MODEL,
        measured.results,
        measured.ceiling.best(TARGET_MODEL),
        settings.batch_rows,
        measured.prediction_logs,
    )
    print()
    print(
        f"the issue's targets, for the {MODEL_KINDS[TARGET_MODEL].title}, "
        "with every prediction logged to Kafka:"
    )
    print(targets_table(checks, measured.log_checks.get(TARGET_MODEL)))
    return checks


def write_json(
    path: Path,
    settings: Settings,
    measured: Measured,
    checks: list[TargetCheck],
    versions: dict[str, str],
    busy_at_start: float | None,
) -> None:
    document = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cores": os.cpu_count(), "busy_at_start": busy_at_start} | versions,
        "settings": {
            "duration_seconds": settings.duration,
            "warm_up_seconds": settings.warm_up,
            "concurrencies": settings.concurrencies,
            "batch_rows": settings.batch_rows,
            "batch_concurrencies": settings.batch_concurrencies,
            "servers": settings.servers,
            "models": settings.models,
            "workers": settings.workers,
        },
        "worker_processes": measured.workers,
        "in_process": {
            model: {
                str(rows): {
                    "rows_per_second": [f.rows_per_second for f in measured.ceiling.samples[model, rows]],
                    "best_rows_per_second": best.rows_per_second,
                }
                for rows, best in measured.ceiling.best(model).items()
            }
            for model in settings.models
        },
        "label_agreement": {f"{server}/{model}": n for (server, model), n in measured.agreement.items()},
        "cells": as_json(measured.results, measured.prediction_logs),
        "prediction_log": {
            model: {"answered": check.answered, "logged": check.logged}
            for model, check in measured.log_checks.items()
        },
        "targets": [check_as_json(check) for check in checks],
        "targets_met": targets_met(checks, measured.log_checks.get(TARGET_MODEL)),
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


def targets_met(checks: list[TargetCheck], log_check: PredictionLogCheck | None) -> bool:
    """Every target measured and passed; the prediction log complete when Flywheel ran."""
    return all(check.passed for check in checks) and (log_check is None or log_check.passed)


def main(argv: list[str]) -> int:
    arguments, settings = parse_arguments(argv)
    started = time.monotonic()
    busy_at_start = cpu_busy_fraction()
    wake_up = wake_up_cost()
    stop_on_sigterm()
    ensure_oha()
    versions = {
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "scikit-learn": sklearn.__version__,
        "oha": OHA_VERSION,
        "uvicorn": uvicorn_speedups()[1],
    }
    if "mlflow" in settings.servers:
        versions["mlflow"] = ensure_mlflow(MLFLOW_VENV, MLFLOW_REQUIREMENTS)
    infra = infrastructure_env(REPO_ROOT)
    with ExitStack() as cleanup:
        work_dir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="flywheel-bench-serving-")))
        measured = measure(settings, infra, work_dir, cleanup)
    checks = print_report(settings, measured, versions)
    if busy := busy_warning(busy_at_start, "the servers were measured in turns"):
        print(busy)
    print(
        f"machine: {os.cpu_count()} cores ({percent(busy_at_start)} CPU busy at start"
        + (f"; {wake_up.text()}" if wake_up else "")
        + "), "
        + ", ".join(f"{name} {version}" for name, version in versions.items() if name != "uvicorn")
        + f"; the benchmark took {time.monotonic() - started:.0f}s"
    )
    if arguments.json:
        write_json(arguments.json, settings, measured, checks, versions, busy_at_start)
        print(f"figures written to {arguments.json}")
    met = targets_met(checks, measured.log_checks.get(TARGET_MODEL))
    return 1 if arguments.require_target and not met else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        print("interrupted: the servers are stopped, the bench database dropped", file=sys.stderr)
        sys.exit(130)
