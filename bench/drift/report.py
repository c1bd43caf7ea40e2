"""The side-by-side tables of bench/drift and the figures they are summed up in."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from bench.drift.workload import SCENARIOS

SAME_INPUTS_TOLERANCE = 1e-6
SMALL_REFERENCE_ROWS = 1000


@dataclass
class Agreement:
    """How one mode (Evidently's default methods, or PSI everywhere) compared over every pair."""

    mode: str
    columns: int = 0
    verdicts_agree: int = 0
    methods_agree: int = 0
    datasets: int = 0
    datasets_agree: int = 0
    same_inputs: int = 0
    same_inputs_max_difference: float = 0.0
    function_max_difference: float = 0.0
    approximations: dict[str, float] = field(default_factory=dict)  # why -> largest |difference|
    disagreements: list[str] = field(default_factory=list)


def compared_on_same_inputs(column: dict[str, Any], reference_rows: int) -> str | None:
    """None when the monitor compares exactly what Evidently compares; else why not."""
    if column["compared_on"] == "bins":
        return "the profile's decile bins, not Evidently's Sturges bins of both tables"
    if column["compared_on"] == "sample" and reference_rows > SMALL_REFERENCE_ROWS:
        return "the profile's 1,000-row sample of the reference (post-stratified), not all of it"
    return None


def pair_tables(
    pairs: list[tuple[str, int, str]], ours: dict[str, Any], theirs: dict[str, Any]
) -> tuple[list[str], list[Agreement]]:
    """The lines of the side-by-side table of every pair, per mode, and each mode's agreement."""
    lines: list[str] = []
    agreements = []
    for mode, title in [("default", "Evidently's default methods"), ("psi", "PSI on request")]:
        agreement = Agreement(mode)
        lines += [
            "",
            f"{title}: Evidently | the monitor (profile + window) | our functions on Evidently's inputs",
            f"{'scenario':<15}{'ref':>7} {'feature':<10}{'method':<14}{'Evidently':>12}{'monitor':>12}"
            f"{'|diff|':>9}{'functions':>11}  {'verdicts':<15}note",
        ]
        for scenario, reference_rows, path in sorted(
            pairs, key=lambda pair: (pair[1], SCENARIOS.index(pair[0]))
        ):
            mine, evidently = ours[path][mode], theirs[path][mode]
            for name, expected in evidently["columns"].items():
                got = mine["columns"][name]
                difference = _difference(got["statistic"], expected["statistic"])
                function_difference = _difference(got["on_evidently_inputs"], expected["statistic"])
                why = compared_on_same_inputs(got, reference_rows)
                agreement.columns += 1
                agreement.verdicts_agree += got["drifted"] == expected["drifted"]
                agreement.methods_agree += got["method"] == expected["method"]
                agreement.function_max_difference = max(
                    agreement.function_max_difference, function_difference
                )
                if why is None:
                    agreement.same_inputs += 1
                    agreement.same_inputs_max_difference = max(
                        agreement.same_inputs_max_difference, difference
                    )
                else:
                    agreement.approximations[why] = max(agreement.approximations.get(why, 0.0), difference)
                verdicts = f"{_verdict(expected['drifted'])}/{_verdict(got['drifted'])}"
                if got["drifted"] != expected["drifted"] or got["method"] != expected["method"]:
                    agreement.disagreements.append(f"{scenario}, {reference_rows} rows, {name}")
                    verdicts += " DIFFER"
                method = (
                    expected["method"]
                    if got["method"] == expected["method"]
                    else f"{expected['method']}/{got['method']}"
                )
                lines.append(
                    f"{scenario:<15}{reference_rows:>7} {name:<10}{method:<14}{expected['statistic']:>12.6g}"
                    f"{got['statistic']:>12.6g}{difference:>9.1e}{function_difference:>11.1e}  {verdicts:<15}"
                    f"{'same inputs' if why is None else 'approximate: ' + got['compared_on']}"
                )
            agreement.datasets += 1
            agreement.datasets_agree += mine["dataset_drift"] == evidently["dataset_drift"]
            lines.append(
                f"{scenario:<15}{reference_rows:>7} {'dataset':<10}{'share >= 0.5':<14}"
                f"{evidently['drift_share']:>12.3f}{mine['drift_share']:>12.3f}{'':>20}  "
                f"{_verdict(evidently['dataset_drift'])}/{_verdict(mine['dataset_drift'])}"
            )
        agreements.append(agreement)
    return lines, agreements


def agreement_lines(agreement: Agreement) -> list[str]:
    title = "default methods" if agreement.mode == "default" else "PSI on request"
    lines = [
        f"{title}: verdicts agree on {agreement.verdicts_agree}/{agreement.columns} features "
        f"(methods {agreement.methods_agree}/{agreement.columns}) and "
        f"{agreement.datasets_agree}/{agreement.datasets} datasets",
        f"  same inputs ({agreement.same_inputs} features): largest |difference| "
        f"{agreement.same_inputs_max_difference:.1e} "
        f"({'within' if agreement.same_inputs_max_difference <= SAME_INPUTS_TOLERANCE else 'OUTSIDE'} 1e-6)",
        f"  our functions on Evidently's own inputs (all {agreement.columns}): largest |difference| "
        f"{agreement.function_max_difference:.1e}",
    ]
    lines += [
        f"  approximate, {why}: largest |difference| {largest:.3g}"
        for why, largest in agreement.approximations.items()
    ]
    if agreement.disagreements:
        lines.append(f"  verdicts or methods differ: {'; '.join(agreement.disagreements)}")
    return lines


def large_lines(
    ours: dict[str, Any], theirs: dict[str, Any], rows: int, shifted: list[str]
) -> tuple[list[str], float]:
    """The timing table of the large pair; returns it and the ratio of Evidently's time to ours (the
    window and the report, the profile being made once at training)."""
    mine, evidently = ours["result"]["columns"], theirs["result"]["columns"]
    agree = sum(mine[name]["drifted"] == column["drifted"] for name, column in evidently.items())
    detected = sorted(name for name, column in mine.items() if column["drifted"])
    monitor_seconds = ours["stream_seconds"] + ours["evaluate_seconds"]
    with_profile = ours["profile_seconds"] + monitor_seconds
    ratio = theirs["seconds"] / monitor_seconds
    lines = [
        f"{rows:,} reference + {rows:,} current rows x {len(evidently)} numeric features "
        f"({len(shifted)} shifted: {', '.join(shifted)})",
        f"{'':<44}{'Evidently ' + theirs['evidently']:>22}{'Flywheel':>12}",
        f"{'report (s)':<44}{theirs['seconds']:>22.2f}{monitor_seconds:>12.2f}"
        f"   (stream {ours['stream_seconds']:.2f} + evaluate {ours['evaluate_seconds']:.3f})",
        f"{'+ the profile, made once at training (s)':<44}{'':>22}{with_profile:>12.2f}"
        f"   (profile {ours['profile_seconds']:.2f})",
        f"{'peak memory of the process (MB)':<44}{theirs['peak_rss_mb']:>22.0f}{ours['peak_rss_mb']:>12.0f}",
        f"{'  of which the loaded tables and libraries (MB)':<44}{theirs['rss_loaded_mb']:>22.0f}"
        f"{ours['rss_loaded_mb']:>12.0f}",
        f"{'window state (bytes)':<44}{'':>22}{ours['window_state_bytes']:>12,}",
        f"verdicts agree on {agree}/{len(evidently)} features; dataset drift "
        f"{_verdict(theirs['result']['dataset_drift'])}/{_verdict(ours['result']['dataset_drift'])} "
        f"(Evidently/Flywheel); Flywheel found drift in {', '.join(detected) or 'nothing'}",
        f"ratio: Evidently / Flywheel = {ratio:.1f}x for the report "
        f"({theirs['seconds'] / with_profile:.1f}x counting the profile); target >= 40x: "
        f"{'PASS' if ratio >= 40 and agree == len(evidently) else 'MISS'}",
    ]
    return lines, ratio


def _difference(a: float, b: float) -> float:
    if math.isnan(a) and math.isnan(b):
        return 0.0
    return abs(a - b)


def _verdict(drifted: bool) -> str:
    return "drift" if drifted else "-"
