"""Flywheel's side of bench/drift, run in a process of its own so its memory is its own:

    python -m bench.drift.ours pairs OUT.json PAIR.npz...   # the monitor's verdicts, default and PSI
    python -m bench.drift.ours large OUT.json DATA.npz      # the monitor's full report on a large pair, timed

The monitor's path, as the service will run it: the trainer's `reference_profile` of the reference
table (what training stores), read back from JSON as a `Reference`; the current table streamed through
`TumblingWindows` in chunks of rows, as prediction-logged events bring them; `evaluate` on the closed
window. For the pairs it also applies our statistics functions to exactly the inputs Evidently prepares
from the whole tables (the function parity, whatever the monitor keeps in memory).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from services.monitor import statistics  # noqa: E402
from services.monitor.drift import DriftConfig, DriftMethod, WindowReport, evaluate  # noqa: E402
from services.monitor.reference import Reference  # noqa: E402
from services.monitor.windows import TumblingWindows, WindowSettings  # noqa: E402
from services.trainer.profile import reference_profile  # noqa: E402
from services.trainer.spec import TrainingSpec  # noqa: E402

CHUNK_ROWS = 10_000  # rows per streamed chunk: a large prediction-logged batch
EVIDENTLY_MAX_DISCRETE = 20  # Evidently bins numeric features with more reference values (Sturges)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
PSI_EVERYWHERE = DriftConfig(numeric_method=DriftMethod.PSI, categorical_method=DriftMethod.PSI)


def load(path: str) -> tuple[pd.DataFrame, dict[str, np.ndarray], list[str], list[str]]:
    """The reference as a training table, the current as columns (None for a missing category)."""
    data = np.load(path)
    numeric, categorical = data["numeric"].tolist(), data["categorical"].tolist()
    reference = pd.DataFrame({name: data[f"reference/{name}"] for name in [*numeric, *categorical]})
    for name in categorical:
        reference[name] = reference[name].astype(object).where(reference[name] != "", None)
    current: dict[str, Any] = {name: data[f"current/{name}"] for name in numeric}
    for name in categorical:
        current[name] = [value or None for value in data[f"current/{name}"].tolist()]
    return reference, current, numeric, categorical


def profile(reference: pd.DataFrame, categorical: list[str]) -> Reference:
    """What training stores for the reference table, as the monitor reads it back."""
    rng = np.random.default_rng(0)
    probabilities = rng.random(len(reference))
    spec = TrainingSpec(
        dataset_uri="memory://reference.parquet",
        target="target",
        task="classification",
        estimator="logistic_regression",
        model_name="bench-drift",
        categorical_columns=categorical,
    )
    stored = reference_profile(
        reference.assign(target=(probabilities > 0.5).astype(int)),
        spec,
        (probabilities > 0.5).astype(int),
        np.column_stack([1 - probabilities, probabilities]),
    )
    return Reference.from_profile(json.loads(json.dumps(stored, allow_nan=False)))


def monitor(reference: Reference, current: dict[str, Any], configs: list[DriftConfig]) -> list[WindowReport]:
    """Stream the current columns through one window, close it, judge it with each config."""
    rows = len(next(iter(current.values())))
    windows = TumblingWindows("bench", 1, reference, WindowSettings(max_rows=rows, max_seconds=None))
    closed = []
    for start in range(0, rows, CHUNK_ROWS):
        chunk = {name: values[start : start + CHUNK_ROWS] for name, values in current.items()}
        closed += windows.add(chunk, {}, NOW)
    (window,) = closed
    return [evaluate(window, config) for config in configs]


def as_columns(report: WindowReport) -> dict[str, Any]:
    return {
        "columns": {
            feature.feature: {
                "method": feature.drift.method,
                "statistic": feature.drift.statistic,
                "threshold": feature.drift.threshold,
                "drifted": feature.drift.drifted,
                "compared_on": feature.compared_on,
            }
            for feature in report.features
            if feature.drift is not None
        },
        "drift_share": report.drift_share,
        "dataset_drift": report.dataset_drift,
    }


def on_evidently_inputs(method: str, reference: np.ndarray, current: np.ndarray, numeric: bool) -> float:
    """Our statistic on the inputs Evidently prepares from whole columns: present values; for the count
    methods, counts per value (sorted), or per Sturges bin of both columns for a numeric feature with
    more than 20 reference values."""
    if numeric:
        reference, current = reference[~np.isnan(reference)], current[~np.isnan(current)]
    else:
        reference, current = reference[reference != ""], current[current != ""]
    if method == "ks":
        return statistics.ks_p_value(reference, current)
    if method == "wasserstein":
        return statistics.wasserstein_normed(reference, current)
    if numeric and np.unique(reference).size > EVIDENTLY_MAX_DISCRETE and method in ("psi", "jensenshannon"):
        edges = np.histogram_bin_edges(np.concatenate([reference, current]), bins="sturges")
        reference_counts, current_counts = np.histogram(reference, edges)[0], np.histogram(current, edges)[0]
    else:
        keys = np.union1d(reference, current)
        reference_counts = np.array([np.count_nonzero(reference == key) for key in keys])
        current_counts = np.array([np.count_nonzero(current == key) for key in keys])
    tests = {
        "psi": statistics.psi,
        "jensenshannon": statistics.jensen_shannon_distance,
        "chisquare": statistics.chi_square_p_value,
        "z": statistics.z_test_p_value,
    }
    return tests[method](reference_counts, current_counts)


def judge_pair(path: str) -> dict[str, Any]:
    data = np.load(path)
    reference_table, current, numeric, categorical = load(path)
    reference = profile(reference_table, categorical)
    default, psi = monitor(reference, current, [DriftConfig(), PSI_EVERYWHERE])
    results = {"default": as_columns(default), "psi": as_columns(psi)}
    for result in results.values():
        for name, column in result["columns"].items():
            column["on_evidently_inputs"] = on_evidently_inputs(
                column["method"], data[f"reference/{name}"], data[f"current/{name}"], name in numeric
            )
    return results


def judge_large(path: str) -> dict[str, Any]:
    reference_table, current, _, categorical = load(path)
    rss_loaded = current_rss_mb()
    started = time.perf_counter()
    reference = profile(reference_table, categorical)
    profiled = time.perf_counter()
    rows = len(next(iter(current.values())))
    windows = TumblingWindows("bench", 1, reference, WindowSettings(max_rows=rows, max_seconds=None))
    closed = []
    for start in range(0, rows, CHUNK_ROWS):
        closed += windows.add(
            {name: values[start : start + CHUNK_ROWS] for name, values in current.items()}, {}, NOW
        )
    streamed = time.perf_counter()
    (window,) = closed
    report = evaluate(window, DriftConfig())
    finished = time.perf_counter()
    return {
        "result": as_columns(report),
        "profile_seconds": profiled - started,
        "stream_seconds": streamed - profiled,
        "evaluate_seconds": finished - streamed,
        "window_state_bytes": window.nbytes(),
        "rss_loaded_mb": rss_loaded,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def current_rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str]) -> None:
    command, out, paths = argv[0], argv[1], argv[2:]
    output = (
        {"pairs": {path: judge_pair(path) for path in paths}} if command == "pairs" else judge_large(paths[0])
    )
    Path(out).write_text(json.dumps(output))


if __name__ == "__main__":
    main(sys.argv[1:])
