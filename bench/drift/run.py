"""Flywheel's drift statistics against Evidently's, on the same data, in the same run.

    python bench/drift/run.py [--rows N | --quick] [--json PATH] [--require-target]

1. Correctness: five reference/current pairs (no shift, mean shift, variance shift, new categories,
   missing values), each against a 1,000-row and a 20,000-row reference, judged by Evidently's
   DataDriftPreset (default methods, then PSI for every feature) and by the monitor (the trainer's
   profile of the reference, the current rows streamed through a window); side by side, per feature.
2. Speed: the full drift report on N reference + N current rows x 20 numeric features (default
   1,000,000), Evidently against the monitor, each in a process of its own; seconds, peak memory, the
   ratio (target: >= 40x with the same verdicts).
3. Throughput (bench/drift/throughput.py): the monitor service consuming prediction-logged from Kafka on
   one core: its top rate on a backlog, then a steady run at 14,000 predictions/s for
   --throughput-seconds (default 600, 60 with --quick) with its RSS and consumer lag sampled (targets:
   >= 14,000 predictions/s, memory flat over a 10-minute run).

    python bench/drift/run.py --only throughput [--throughput-seconds S] [--request-rows R] [--profile DIR]

Evidently (pinned in bench/drift/requirements-evidently.txt) runs in bench/.venv-evidently, installed on
first use; data goes to it through .npz files. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # run as a script: make `bench` importable
    sys.path.insert(0, str(REPO_ROOT))

from bench.common.infrastructure import infrastructure_env  # noqa: E402
from bench.common.machine import busy_warning, cpu_busy_fraction, percent, wake_up_cost  # noqa: E402
from bench.drift.evidently_install import ensure_evidently  # noqa: E402
from bench.drift.report import agreement_lines, large_lines, pair_tables  # noqa: E402
from bench.drift.throughput import Throughput, ThroughputBench, ThroughputSettings  # noqa: E402
from bench.drift.throughput_report import throughput_lines  # noqa: E402
from bench.drift.workload import write_large, write_pairs  # noqa: E402

HERE = Path(__file__).resolve().parent
VENV = HERE.parent / ".venv-evidently"
REQUIREMENTS = HERE / "requirements-evidently.txt"
DEFAULT_ROWS = 1_000_000
QUICK_ROWS = 100_000
TARGET_RATIO = 40.0
THROUGHPUT_SECONDS = 600
QUICK_THROUGHPUT_SECONDS = 60
PARTS = ("statistics", "throughput")


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


def seconds_argument(text: str) -> int:
    value = int(text)
    if value < 20:
        raise argparse.ArgumentTypeError(f"expected at least 20 seconds, got {value}")
    return value


def stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so the servers are stopped, the topics and databases deleted."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rows", type=positive_int, help=f"rows per table of the timed pair (default {DEFAULT_ROWS:,})"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke run: {QUICK_ROWS:,} rows per timed table, a {QUICK_THROUGHPUT_SECONDS} s steady run",
    )
    parser.add_argument(
        "--throughput-seconds",
        type=seconds_argument,
        help=f"the monitor's steady run in seconds (default {THROUGHPUT_SECONDS}, "
        f"{QUICK_THROUGHPUT_SECONDS} with --quick)",
    )
    parser.add_argument(
        "--request-rows",
        type=int,
        choices=[1, 2, 4, 5, 10, 20, 25, 50, 100, 200, 500, 1000, 2000],
        default=1,
        help="rows per logged request in the throughput events (default 1: 2,000 requests an event, "
        "as serving logs 1-row requests)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample the monitor with py-spy after its top rate was measured (collapsed stacks into DIR, "
        "a summary printed)",
    )
    parser.add_argument(
        "--only",
        choices=PARTS,
        help="run one part: the statistics against Evidently, or the monitor's throughput",
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--require-target", action="store_true", help="exit 1 unless every target is met")
    arguments = parser.parse_args(argv)
    stop_on_sigterm()
    started = time.monotonic()
    busy = cpu_busy_fraction()
    load = os.getloadavg()
    wake_up = wake_up_cost()
    print(
        f"machine: {os.cpu_count()} cores, {percent(busy)} CPU busy at start, load average "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
        + (f", {wake_up.text()}" if wake_up else "")
        + f"; Python {platform.python_version()}"
    )
    if warning := busy_warning(busy, "each side ran alone, one after the other"):
        print(warning)
    commit = source_version()
    print(f"measuring commit {commit}")
    document: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "cpu_busy_at_start": busy,
        "load_average_at_start": load,
    }
    met = True
    if arguments.only != "throughput":
        rows = arguments.rows or (QUICK_ROWS if arguments.quick else DEFAULT_ROWS)
        statistics, statistics_met = compare_statistics(rows)
        document |= statistics
        met = met and statistics_met
    if arguments.only != "statistics":
        seconds = arguments.throughput_seconds or (
            QUICK_THROUGHPUT_SECONDS if arguments.quick else THROUGHPUT_SECONDS
        )
        result = measure_throughput(
            ThroughputSettings(
                steady_seconds=seconds,
                # enough for the warm-up and the measuring at 30,000/s, and the profile's 20 s
                backlog_seconds=(40 if arguments.quick else 75) + (25 if arguments.profile else 0),
                warmup_predictions=400_000 if arguments.quick else 1_000_000,
                measure_seconds=15 if arguments.quick else 30,
                request_rows=arguments.request_rows,
                profile_dir=arguments.profile,
            )
        )
        print()
        print("\n".join(throughput_lines(result)))
        document["throughput"] = result.as_json()
        met = met and result.rate_met and result.memory_met
    load = os.getloadavg()
    print(
        f"\nthe benchmark took {time.monotonic() - started:.0f} s; load average at the end "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    document["load_average_at_end"] = load
    document["targets_met"] = met
    if arguments.json:
        arguments.json.write_text(json.dumps(document, indent=2))
    return 1 if arguments.require_target and not met else 0


def source_version() -> str:
    """The commit measured, and whether the services' code differed from it in the work tree."""
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


def compare_statistics(rows: int) -> tuple[dict[str, Any], bool]:
    """Parts 1 and 2: the verdicts on the pairs and the timed large pair; their figures and whether
    their targets were met."""
    evidently_python = ensure_evidently(VENV, REQUIREMENTS)
    evidently = [str(HERE / "evidently_side.py")]
    ours = ["-m", "bench.drift.ours"]
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
    document = {
        "rows": rows,
        "evidently": their_large["evidently"],
        "pairs": {"flywheel": mine["pairs"], "evidently": theirs["pairs"]},
        "agreement": [agreement.__dict__ for agreement in agreements],
        "large": {"flywheel": our_large, "evidently": their_large, "ratio": ratio},
        "statistics_targets_met": met,
    }
    return document, met


def measure_throughput(settings: ThroughputSettings) -> Throughput:
    """Part 3, on the platform's servers (deploy/local/infra.sh); everything it set up taken down again."""
    print("\nthe monitor's throughput from Kafka (about 2 minutes, then the steady run)", flush=True)
    infra = infrastructure_env(REPO_ROOT)
    with ExitStack() as cleanup:
        work_dir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="bench-drift-monitor-")))
        return ThroughputBench(settings, infra, work_dir, cleanup, REPO_ROOT).run()


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        print(
            "interrupted: the servers are stopped, the topics and the bench databases deleted",
            file=sys.stderr,
        )
        sys.exit(130)
