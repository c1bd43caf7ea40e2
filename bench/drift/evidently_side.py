"""Evidently's side of bench/drift, run by bench/.venv-evidently's Python (it imports Evidently and only
numpy and pandas besides; never Flywheel's code).

    evidently_side.py pairs OUT.json PAIR.npz...   # the DataDriftPreset, default and with PSI, per pair
    evidently_side.py large OUT.json DATA.npz      # the DataDriftPreset on a large pair, timed

Prints nothing; writes per column Evidently's method, drift score and verdict, the dataset verdict, and
for `large` the seconds of `Report.run` and the process's memory.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import warnings
from typing import Any

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("EVIDENTLY_DISABLE_TELEMETRY", "1")

import numpy as np
import pandas as pd

# Evidently runs in a virtualenv of its own (bench/.venv-evidently), not the project's.
from evidently import DataDefinition, Dataset, Report  # type: ignore[import-not-found]
from evidently.presets import DataDriftPreset  # type: ignore[import-not-found]

# Evidently's display names, as our method names.
METHODS = {
    "K-S p_value": "ks",
    "Wasserstein distance (normed)": "wasserstein",
    "chi-square p_value": "chisquare",
    "Jensen-Shannon distance": "jensenshannon",
    "Z-test p_value": "z",
    "PSI": "psi",
    "psi": "psi",
}


def load(path: str) -> tuple[pd.DataFrame, pd.DataFrame, DataDefinition]:
    data = np.load(path)
    numeric, categorical = data["numeric"].tolist(), data["categorical"].tolist()

    def frame(side: str) -> pd.DataFrame:
        columns: dict[str, Any] = {name: data[f"{side}/{name}"] for name in numeric}
        for name in categorical:
            values = data[f"{side}/{name}"].astype(object)
            values[values == ""] = np.nan
            columns[name] = values
        return pd.DataFrame(columns)

    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    return frame("reference"), frame("current"), definition


def judge(
    reference: pd.DataFrame, current: pd.DataFrame, definition: DataDefinition, method: str | None
) -> dict[str, Any]:
    preset = DataDriftPreset() if method is None else DataDriftPreset(method=method)
    snapshot = Report([preset], include_tests=True).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    result = snapshot.dict()
    columns: dict[str, Any] = {}
    by_id: dict[str, str] = {}
    share = 0.0
    for metric in result["metrics"]:
        config = metric["config"]
        if config["type"].endswith("ValueDrift"):
            by_id[metric["id"]] = config["column"]
            columns[config["column"]] = {
                "method": METHODS.get(config["method"], config["method"]),
                "statistic": float(metric["value"]),
                "threshold": config["threshold"],
            }
        elif config["type"].endswith("DriftedColumnsCount"):
            share = metric["value"]["share"]
    for test in result["tests"]:
        column = by_id.get(test["metric_config"]["metric_id"])
        if column is not None:
            columns[column]["drifted"] = test["status"] == "FAIL"
    return {"columns": columns, "drift_share": share, "dataset_drift": share >= preset.drift_share}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str]) -> None:
    command, out, paths = argv[0], argv[1], argv[2:]
    warnings.simplefilter("ignore")  # scipy's divide-by-zero for new categories, plotly's deprecations
    import evidently

    output: dict[str, Any] = {"evidently": evidently.__version__, "pandas": pd.__version__}
    if command == "pairs":
        output["pairs"] = {}
        for path in paths:
            reference, current, definition = load(path)
            output["pairs"][path] = {
                "default": judge(reference, current, definition, None),
                "psi": judge(reference, current, definition, "psi"),
            }
    else:
        reference, current, definition = load(paths[0])
        output["rss_loaded_mb"] = current_rss_mb()
        started = time.perf_counter()
        output["result"] = judge(reference, current, definition, None)
        output["seconds"] = time.perf_counter() - started
        output["peak_rss_mb"] = peak_rss_mb()
    with open(out, "w") as file:
        json.dump(output, file)


if __name__ == "__main__":
    main(sys.argv[1:])
