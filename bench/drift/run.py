"""Flywheel's drift statistics against Evidently's, on the same data, in the same run.

    python bench/drift/run.py [--rows N | --quick] [--json PATH] [--require-target]

1. Correctness: five reference/current pairs (no shift, mean shift, variance shift, new categories,
   missing values), each against a 1,000-row and a 20,000-row reference, judged by Evidently's
   DataDriftPreset (default methods, then PSI for every feature) and by the monitor (the trainer's
   profile of the reference, the current rows streamed through a window); side by side, per feature.
2. Speed: the full drift report on N reference + N current rows x 20 numeric features (default
   1,000,000), Evidently against the monitor, each in a process of its own; seconds, peak memory, the
   ratio (target: >= 40x with the same verdicts).

Evidently (pinned in bench/drift/requirements-evidently.txt) runs in bench/.venv-evidently, installed on
first use; data goes to it through .npz files. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # run as a script: make `bench` importable
    sys.path.insert(0, str(REPO_ROOT))

from bench.common.machine import busy_warning, cpu_busy_fraction, percent  # noqa: E402
from bench.drift.evidently_install import ensure_evidently  # noqa: E402
from bench.drift.report import agreement_lines, large_lines, pair_tables  # noqa: E402
from bench.drift.workload import write_large, write_pairs  # noqa: E402

HERE = Path(__file__).resolve().parent
VENV = HERE.parent / ".venv-evidently"
REQUIREMENTS = HERE / "requirements-evidently.txt"
DEFAULT_ROWS = 1_000_000
QUICK_ROWS = 100_000
TARGET_RATIO = 40.0


def positive_int(text: str) -> int:
    value = int(text.replace("_", "").replace(",", ""))
    if value < 1000:
        raise argparse.ArgumentTypeError(f"expected at least 1000 rows, got {value}")
    return value


def run_side(
    python: Path | str, script: list[str], command: str, out: Path, paths: list[Path]
) -> dict[str, Any]:
    """One side in a process of its own (its peak memory is then its own); its JSON answer."""
    subprocess.run([str(python), *script, command, str(out), *map(str, paths)], check=True, cwd=REPO_ROOT)
    answer: dict[str, Any] = json.loads(out.read_text())
    return answer


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rows", type=positive_int, help=f"rows per table of the timed pair (default {DEFAULT_ROWS:,})"
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"a smoke run: {QUICK_ROWS:,} rows per timed table"
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--require-target", action="store_true", help="exit 1 unless every target is met")
    arguments = parser.parse_args(argv)
    rows = arguments.rows or (QUICK_ROWS if arguments.quick else DEFAULT_ROWS)

    evidently_python = ensure_evidently(VENV, REQUIREMENTS)
    evidently = [str(HERE / "evidently_side.py")]
    ours = ["-m", "bench.drift.ours"]
    busy = cpu_busy_fraction()
    load = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} cores, {percent(busy)} CPU busy at start, load average "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; Python {platform.python_version()}"
    )
    if warning := busy_warning(busy, "each side ran alone, one after the other"):
        print(warning)

    with tempfile.TemporaryDirectory(prefix="bench-drift-") as scratch:
        directory = Path(scratch)
        pairs = write_pairs(directory)
        paths = [pair.path for pair in pairs]
        theirs = run_side(evidently_python, evidently, "pairs", directory / "evidently-pairs.json", paths)
        mine = run_side(sys.executable, ours, "pairs", directory / "flywheel-pairs.json", paths)
        lines, agreements = pair_tables(
            [(pair.scenario, pair.reference_rows, str(pair.path)) for pair in pairs],
            mine["pairs"],
            theirs["pairs"],
        )
        print("\n".join(lines))
        print()
        for agreement in agreements:
            print("\n".join(agreement_lines(agreement)))

        large = directory / "large.npz"
        shifted = write_large(large, rows)
        print(
            f"\ntiming the full report ({rows:,} rows per table); Evidently takes minutes at 1,000,000 rows"
        )
        our_large = run_side(sys.executable, ours, "large", directory / "flywheel-large.json", [large])
        their_large = run_side(
            evidently_python, evidently, "large", directory / "evidently-large.json", [large]
        )
        timing, ratio = large_lines(our_large, their_large, rows, shifted)
        print("\n".join(timing))
    print(
        "\nevents/s from Kafka and memory over a 10-minute run: not measured here yet; they need the monitor "
        "service consuming prediction-logged (bench/README.md)"
    )

    default = agreements[0]
    verdicts_agree = default.verdicts_agree == default.columns and default.datasets_agree == default.datasets
    large_agree = all(
        our_large["result"]["columns"][name]["drifted"] == column["drifted"]
        for name, column in their_large["result"]["columns"].items()
    )
    met = (
        verdicts_agree
        and large_agree
        and default.same_inputs_max_difference <= 1e-6
        and ratio >= TARGET_RATIO
    )
    if arguments.json:
        arguments.json.write_text(
            json.dumps(
                {
                    "rows": rows,
                    "cpu_busy_at_start": busy,
                    "evidently": their_large["evidently"],
                    "pairs": {"flywheel": mine["pairs"], "evidently": theirs["pairs"]},
                    "agreement": [agreement.__dict__ for agreement in agreements],
                    "large": {"flywheel": our_large, "evidently": their_large, "ratio": ratio},
                    "targets_met": met,
                },
                indent=2,
            )
        )
    return 1 if arguments.require_target and not met else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
