"""The benchmark's figures as text: the comparison with its targets, and the per-request latencies."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bench.registry.measure import LoggingResult, SearchResult

TARGET_RATIO = 10.0
# The figure the issue quotes, measured the same way on another machine: for orientation only.
ISSUE_MLFLOW_RUNS_PER_SECOND = 9.8
ISSUE_MLFLOW_SEARCH_MS = 175.0


@dataclass(frozen=True)
class ServerFigures:
    logging: LoggingResult
    search: SearchResult


@dataclass(frozen=True)
class Comparison:
    mlflow: ServerFigures
    flywheel: ServerFigures

    @property
    def logging_ratio(self) -> float:
        return self.flywheel.logging.runs_per_second / self.mlflow.logging.runs_per_second

    @property
    def search_ratio(self) -> float:
        return self.mlflow.search.latency.p50_ms / self.flywheel.search.latency.p50_ms

    @property
    def targets_met(self) -> bool:
        return self.logging_ratio >= TARGET_RATIO and self.search_ratio >= TARGET_RATIO


def summary_table(comparison: Comparison, mlflow_version: str) -> str:
    mlflow, flywheel = comparison.mlflow, comparison.flywheel
    target = f">= {TARGET_RATIO:g}x"
    rows = [
        ("", f"MLflow {mlflow_version}", "Flywheel", "ratio", "target"),
        (
            "logging (runs/s)",
            f"{mlflow.logging.runs_per_second:.1f}",
            f"{flywheel.logging.runs_per_second:.1f}",
            f"{comparison.logging_ratio:.1f}x",
            f"{target}  {_verdict(comparison.logging_ratio)}",
        ),
        (
            "logging (values/s)",
            f"{mlflow.logging.values_per_second:.0f}",
            f"{flywheel.logging.values_per_second:.0f}",
            f"{comparison.logging_ratio:.1f}x",
            "",
        ),
        (
            "search p50 (ms)",
            f"{mlflow.search.latency.p50_ms:.1f}",
            f"{flywheel.search.latency.p50_ms:.1f}",
            f"{comparison.search_ratio:.1f}x",
            f"{target}  {_verdict(comparison.search_ratio)}",
        ),
        (
            "search p95 (ms)",
            f"{mlflow.search.latency.p95_ms:.1f}",
            f"{flywheel.search.latency.p95_ms:.1f}",
            f"{mlflow.search.latency.p95_ms / flywheel.search.latency.p95_ms:.1f}x",
            "",
        ),
        (
            "CPU per run (ms)",
            f"{mlflow.logging.cpu_ms_per_run:.1f}",
            f"{flywheel.logging.cpu_ms_per_run:.1f}",
            f"{mlflow.logging.cpu_ms_per_run / flywheel.logging.cpu_ms_per_run:.1f}x",
            "",
        ),
        (
            "CPU per search (ms)",
            f"{mlflow.search.cpu_ms_per_search:.1f}",
            f"{flywheel.search.cpu_ms_per_search:.1f}",
            f"{mlflow.search.cpu_ms_per_search / flywheel.search.cpu_ms_per_search:.1f}x",
            "",
        ),
    ]
    return _columns(rows) + "\n(CPU: the server's processes and its PostgreSQL backends, client excluded)"


def latency_table(comparison: Comparison) -> str:
    """Where the time goes: each request type's p50 / p95 / mean on each server, in ms."""
    rows = [("per request (ms)", "MLflow p50 / p95 / mean", "Flywheel p50 / p95 / mean")]
    operations = list(comparison.mlflow.logging.per_operation)
    for operation in operations:
        mlflow = comparison.mlflow.logging.per_operation[operation]
        flywheel = comparison.flywheel.logging.per_operation[operation]
        rows.append(
            (
                operation,
                f"{mlflow.p50_ms:.2f} / {mlflow.p95_ms:.2f} / {mlflow.mean_ms:.2f}",
                f"{flywheel.p50_ms:.2f} / {flywheel.p95_ms:.2f} / {flywheel.mean_ms:.2f}",
            )
        )
    mlflow_search, flywheel_search = comparison.mlflow.search.latency, comparison.flywheel.search.latency
    rows.append(
        (
            "search",
            f"{mlflow_search.p50_ms:.2f} / {mlflow_search.p95_ms:.2f} / {mlflow_search.mean_ms:.2f}",
            f"{flywheel_search.p50_ms:.2f} / {flywheel_search.p95_ms:.2f} / {flywheel_search.mean_ms:.2f}",
        )
    )
    return _columns(rows)


def issue_reference() -> str:
    return (
        f"(the issue's MLflow figure, another machine: {ISSUE_MLFLOW_RUNS_PER_SECOND} runs/s, "
        f"search {ISSUE_MLFLOW_SEARCH_MS:g} ms)"
    )


def search_agreement(expected: list[float], comparison: Comparison) -> list[str]:
    """Warnings when a server's search does not return what the workload implies (empty when both agree)."""
    warnings = []
    for name, figures in (("MLflow", comparison.mlflow), ("Flywheel", comparison.flywheel)):
        returned = figures.search.aucs
        if len(returned) != len(expected):
            warnings.append(
                f"WARNING: {name}'s search returned {len(returned)} runs; expected {len(expected)}"
            )
        elif [round(v, 9) for v in returned] != [round(v, 9) for v in expected]:
            warnings.append(f"WARNING: {name}'s search returned the right number of runs in another order")
    return warnings


def _verdict(ratio: float) -> str:
    return "met" if ratio >= TARGET_RATIO else "MISSED"


def _columns(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:-1], widths[1:-1], strict=True)]
        cells.append(row[-1].ljust(widths[-1]))
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines)
