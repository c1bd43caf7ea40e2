"""The reference/current pairs both sides judge, written to .npz files that both read (Evidently runs in a
virtualenv of its own and never meets our code).

A pair file holds `reference/<column>` and `current/<column>` arrays: float64 with NaN for numeric
columns, unicode with "" for a missing category, plus the lists of numeric and categorical columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

NUMERIC = ["normal", "lognormal", "count5", "flag"]
CATEGORICAL = ["color", "member"]
COLORS = np.array(["red", "green", "blue", "yellow", "black", "white"])
COLOR_SHARES = [0.3, 0.25, 0.2, 0.1, 0.1, 0.05]
SCENARIOS = ["no shift", "mean shift", "variance shift", "new categories", "missing values"]
REFERENCE_SIZES = (1_000, 20_000)  # Evidently's rule: tests up to 1,000 reference rows, distances above
CURRENT_ROWS = 2_000  # within the monitor's 5,000-value reservoir, so the window holds every value
MISSING_SHARE = 0.3
NEW_CATEGORY_SHARE = 0.2


@dataclass(frozen=True)
class Pair:
    scenario: str
    reference_rows: int
    path: Path


def table(rows: int, rng: np.random.Generator, scenario: str = "no shift") -> dict[str, np.ndarray]:
    """One table of the correctness workload, as `scenario` shifts it (the reference is "no shift")."""
    mean, scale = (
        (0.5, 1.0) if scenario == "mean shift" else (0.0, 1.5 if scenario == "variance shift" else 1.0)
    )
    count_shares = [0.35, 0.25, 0.2, 0.12, 0.08] if scenario != "mean shift" else [0.15, 0.2, 0.25, 0.2, 0.2]
    columns = {
        "normal": rng.normal(mean, scale, rows),
        "lognormal": np.exp(rng.normal(mean, scale, rows)),
        "count5": rng.choice(5, rows, p=count_shares).astype(np.float64),
        "flag": (rng.random(rows) < (0.5 if scenario == "mean shift" else 0.3)).astype(np.float64),
        "color": rng.choice(COLORS, rows, p=COLOR_SHARES if scenario != "mean shift" else COLOR_SHARES[::-1]),
        "member": rng.choice(
            np.array(["no", "yes"]), rows, p=[0.6, 0.4] if scenario != "mean shift" else [0.4, 0.6]
        ),
    }
    if scenario == "new categories":
        new = rng.random(rows) < NEW_CATEGORY_SHARE
        columns["color"][new] = rng.choice(np.array(["purple", "orange"]), int(new.sum()))
    if scenario == "missing values":
        for name, values in columns.items():
            missing = rng.random(rows) < MISSING_SHARE
            values[missing] = np.nan if name in NUMERIC else ""
    return columns


def write_pairs(directory: Path, seed: int = 7) -> list[Pair]:
    """Every scenario against a small and a large reference, each pair in its own file."""
    pairs = []
    for reference_rows in REFERENCE_SIZES:
        reference = table(reference_rows, np.random.default_rng(seed))
        for index, scenario in enumerate(SCENARIOS):
            current = table(CURRENT_ROWS, np.random.default_rng(seed + 1 + index), scenario)
            path = directory / f"pair-{reference_rows}-{index}.npz"
            save(path, reference, current, NUMERIC, CATEGORICAL)
            pairs.append(Pair(scenario, reference_rows, path))
    return pairs


LARGE_FEATURES = 20
SHIFTED_MEAN = range(0, 4)  # by 0.3 std
SHIFTED_SPREAD = range(4, 8)  # std 1.3 times


def write_large(path: Path, rows: int, seed: int = 11) -> list[str]:
    """`rows` reference and `rows` current rows of 20 numeric features, 8 of them shifted; the names of
    the shifted ones."""
    rng = np.random.default_rng(seed)
    names = [f"f{index:02d}" for index in range(LARGE_FEATURES)]
    reference, current = {}, {}
    for index, name in enumerate(names):
        location, spread = rng.uniform(-5, 5), rng.uniform(0.5, 3)
        reference[name] = rng.normal(location, spread, rows)
        shift = 0.3 * spread if index in SHIFTED_MEAN else 0.0
        scale = 1.3 if index in SHIFTED_SPREAD else 1.0
        current[name] = rng.normal(location + shift, spread * scale, rows)
    save(path, reference, current, names, [])
    return [names[index] for index in [*SHIFTED_MEAN, *SHIFTED_SPREAD]]


def save(
    path: Path,
    reference: dict[str, np.ndarray],
    current: dict[str, np.ndarray],
    numeric: list[str],
    categorical: list[str],
) -> None:
    arrays: dict[str, Any] = {f"reference/{name}": values for name, values in reference.items()}
    arrays |= {f"current/{name}": values for name, values in current.items()}
    arrays |= {"numeric": np.array(numeric, dtype=str), "categorical": np.array(categorical, dtype=str)}
    np.savez(path, **arrays)
