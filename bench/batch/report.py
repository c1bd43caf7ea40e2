"""The benchmark's figures as text and JSON: a table of rates per model, the ratios of the end-to-end rate
to each ceiling, the target and the exactly-once check."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bench.batch.loops import LoopFigure
from bench.batch.service import ServiceFigure
from bench.batch.topics import ProduceFigure, ResultCheck
from bench.serving.ceiling import InProcessFigure

TARGET_FRACTION = 0.7
# The Kafka ceiling the target uses: the service's Kafka work (a transaction a batch) with its client,
# produced the faster of the two ways.
TARGET_CLIENT, TARGET_MODE = "aiokafka", "transactional"


@dataclass(frozen=True)
class ModelRun:
    model: str
    title: str
    in_process: dict[int, InProcessFigure]  # by rows per call
    produce: ProduceFigure
    service: ServiceFigure
    check: ResultCheck


@dataclass(frozen=True)
class TargetCheck:
    model: str
    end_to_end: float
    in_process: float  # rows/s at the service's batch size
    kafka: float | None  # rows/s of the target loop; None when it was not measured
    kafka_loop: str | None  # which loop that was
    fraction_wanted: float = TARGET_FRACTION

    @property
    def ceiling(self) -> float:
        return self.in_process if self.kafka is None else min(self.in_process, self.kafka)

    @property
    def limit(self) -> str:
        """Which ceiling is the lower."""
        if self.kafka is not None and self.kafka < self.in_process:
            return "the Kafka loop"
        return "in-process onnxruntime"

    @property
    def fraction(self) -> float:
        return self.end_to_end / self.ceiling

    @property
    def passed(self) -> bool:
        return self.fraction >= self.fraction_wanted

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "MISS"


def target_check(run: ModelRun, loops: list[LoopFigure], batch_rows: int) -> TargetCheck:
    loop = target_loop(loops)
    return TargetCheck(
        run.model,
        run.service.rows_per_second,
        run.in_process[batch_rows].rows_per_second,
        None if loop is None else loop.rows_per_second,
        None if loop is None else loop.label,
    )


def target_loop(loops: list[LoopFigure]) -> LoopFigure | None:
    """The fastest loop doing the service's Kafka work with the service's client."""
    candidates = [loop for loop in loops if (loop.client, loop.mode) == (TARGET_CLIENT, TARGET_MODE)]
    return max(candidates, key=lambda loop: loop.rows_per_second, default=None)


def rates_table(run: ModelRun, loops: list[LoopFigure], batch_rows: int, threads: int) -> str:
    """Every rate of one model's run, and the end-to-end rate as a share of each."""
    end_to_end = run.service.rows_per_second
    rows: list[tuple[str, ...]] = [
        ("", "rows/s", "seconds", "end-to-end / it", "produce retries", "CPU cores used")
    ]
    rows.append(
        (
            "Flywheel batch service, end to end (first result to last)",
            _rate(end_to_end),
            f"{run.service.first_to_done_seconds:.1f}",
            "",
            str(run.service.produce_retries),
            _cores(run.service.cpu, run.service.first_to_done_seconds),
        )
    )
    rows.append(
        (
            "  the same from the service's start",
            _rate(run.service.rows_per_second_from_start),
            f"{run.service.to_first_seconds + run.service.first_to_done_seconds:.1f}",
            "",
            "",
            "",
        )
    )
    for rows_per_call, figure in sorted(run.in_process.items(), reverse=True):
        mark = " (the service's batch size)" if rows_per_call == batch_rows else ""
        rows.append(
            (
                f"in-process onnxruntime, {rows_per_call:,}-row calls, {threads} threads{mark}",
                _rate(figure.rows_per_second),
                "",
                _share(end_to_end, figure.rows_per_second),
                "",
                "",
            )
        )
    for loop in loops:
        rows.append(
            (
                f"Kafka loop, no model: {loop.label}",
                _rate(loop.rows_per_second),
                f"{loop.seconds:.1f}",
                _share(end_to_end, loop.rows_per_second),
                "-" if loop.produce_retries is None else str(loop.produce_retries),
                _cores(loop.cpu, loop.seconds),
            )
        )
    rows.append(
        (
            "producing the requests (aiokafka, whole batches)",
            _rate(run.produce.rows_per_second),
            f"{run.produce.seconds:.1f}",
            "",
            "",
            "",
        )
    )
    return _columns(rows, left=1)


def target_line(check: TargetCheck) -> str:
    kafka = "not measured" if check.kafka is None else _rate(check.kafka)
    return (
        f"{check.model}: end-to-end >= {check.fraction_wanted:.0%} of min(ceilings): "
        f"{_rate(check.end_to_end)} / min(in-process {_rate(check.in_process)}, "
        f"Kafka loop ({check.kafka_loop or f'{TARGET_CLIENT} {TARGET_MODE}'}) {kafka}) = "
        f"{check.fraction:.0%}   {check.verdict} "
        f"(the lower ceiling: {check.limit})"
    )


def check_line(run: ModelRun) -> str:
    check = run.check
    duplicates = check.results - check.distinct_keys - check.foreign_keys
    verdict = "PASS" if check.passed else "MISS"
    return (
        f"{run.model}: exactly once: {check.results:,} results read back (read_committed), "
        f"{check.distinct_keys:,} distinct keys, {check.missing_keys:,} missing, {duplicates:,} duplicated, "
        f"{check.foreign_keys:,} unknown; labels differing from in-process onnxruntime: "
        f"{check.label_mismatches:,}   {verdict}"
    )


def cpu_note(run: ModelRun) -> str:
    names = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in run.service.cpu.items())
    return (
        f"{run.model}: first result {run.service.to_first_seconds:.1f} s after the service's start "
        f"({run.service.first_records:,} records); CPU seconds while streaming: {names}"
    )


def run_as_json(run: ModelRun, loops: list[LoopFigure], batch_rows: int) -> dict[str, Any]:
    check = target_check(run, loops, batch_rows)
    return {
        "model": run.model,
        "title": run.title,
        "end_to_end": asdict(run.service)
        | {
            "rows_per_second": run.service.rows_per_second,
            "rows_per_second_from_start": run.service.rows_per_second_from_start,
        },
        "in_process": {
            str(rows): {
                "rows_per_second": f.rows_per_second,
                "microseconds_per_call": f.microseconds_per_call,
            }
            for rows, f in run.in_process.items()
        },
        "produce": asdict(run.produce) | {"rows_per_second": run.produce.rows_per_second},
        "results_check": asdict(run.check)
        | {"exactly_once": run.check.exactly_once, "passed": run.check.passed},
        "ratios": {
            f"in_process_{rows}": run.service.rows_per_second / f.rows_per_second
            for rows, f in run.in_process.items()
        }
        | {
            f"{loop.client} {loop.mode}, {loop.produce}": run.service.rows_per_second / loop.rows_per_second
            for loop in loops
        },
        "target": {
            "fraction_wanted": check.fraction_wanted,
            "in_process": check.in_process,
            "kafka": check.kafka,
            "kafka_loop": check.kafka_loop,
            "ceiling": check.ceiling,
            "limit": check.limit,
            "fraction": check.fraction,
            "verdict": check.verdict,
        },
    }


def loop_as_json(loop: LoopFigure) -> dict[str, Any]:
    return asdict(loop) | {"rows_per_second": loop.rows_per_second}


def _rate(value: float) -> str:
    return f"{value:,.0f}"


def _share(part: float, whole: float) -> str:
    return f"{part / whole:.0%}" if whole else "-"


def _cores(cpu: dict[str, float], seconds: float) -> str:
    return ", ".join(f"{name} {used / seconds:.2f}" for name, used in cpu.items()) if seconds else ""


def _columns(rows: Sequence[tuple[str, ...]], left: int) -> str:
    """Aligned columns: the first `left` to the left, the others to the right."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.ljust(width) if column < left else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines)
