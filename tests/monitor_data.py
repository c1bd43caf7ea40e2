"""Synthetic traffic for the monitor's tests: a reference table profiled by the trainer's own
`reference_profile` (the contract between the two services), and current tables with or without shift."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from services.trainer.profile import reference_profile
from services.trainer.spec import TrainingSpec

NUMERIC = ["income", "age", "skewed"]
CATEGORICAL = ["region", "owns_home"]
FEATURES = NUMERIC + CATEGORICAL
REGIONS = ["north", "south", "east", "west"]


def traffic(
    rows: int,
    seed: int,
    *,
    mean_shift: float = 0.0,
    scale: float = 1.0,
    new_region_share: float = 0.0,
    missing_share: float = 0.0,
) -> pd.DataFrame:
    """Rows of the credit-like table: shifted means (in stds), scaled spreads, a share of regions never
    seen in training, and a share of every feature missing, when asked for."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "income": rng.normal(50_000 + mean_shift * 12_000, 12_000 * scale, rows),
            "age": rng.normal(40 + mean_shift * 10, 10 * scale, rows).round(),
            "skewed": rng.lognormal(mean_shift, scale, rows),
            "region": rng.choice(REGIONS, rows, p=[0.4, 0.3, 0.2, 0.1]),
            "owns_home": rng.choice(["yes", "no"], rows, p=[0.6, 0.4]),
        }
    )
    if mean_shift:
        frame["region"] = rng.choice(REGIONS, rows, p=[0.1, 0.2, 0.3, 0.4])
        frame["owns_home"] = rng.choice(["yes", "no"], rows, p=[0.3, 0.7])
    if new_region_share:
        new = rng.random(rows) < new_region_share
        frame.loc[new, "region"] = rng.choice(["mars", "venus"], int(new.sum()))
    if missing_share:
        frame = frame.astype(object)
        for column in FEATURES:
            frame.loc[rng.random(rows) < missing_share, column] = None
        frame[NUMERIC] = frame[NUMERIC].astype(float)
    return frame


def profile_of(frame: pd.DataFrame, seed: int = 0) -> dict[str, Any]:
    """The trainer's reference profile of `frame` for a classifier of `default` (random predictions)."""
    rng = np.random.default_rng(seed)
    table = frame.assign(default=rng.integers(0, 2, len(frame)))
    spec = TrainingSpec(
        dataset_uri="memory://reference.csv",
        target="default",
        task="classification",
        estimator="logistic_regression",
        model_name="credit-risk",
        seed=seed,
        categorical_columns=CATEGORICAL,
    )
    probabilities = rng.random(len(frame))
    predictions = (probabilities > 0.7).astype(int)
    return reference_profile(table, spec, predictions, np.column_stack([1 - probabilities, probabilities]))


def columns_of(frame: pd.DataFrame) -> dict[str, Any]:
    """The frame as `prediction-logged` carries features: numeric columns as arrays, categorical as lists."""
    return {
        column: frame[column].to_numpy(dtype=np.float64) if column in NUMERIC else frame[column].tolist()
        for column in FEATURES
    }
