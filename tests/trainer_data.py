"""Synthetic credit-risk data for the trainer's tests (unit and integration)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from services.trainer.spec import ESTIMATORS, TrainingSpec

FEATURES = ["income", "age", "debt_ratio", "region"]
REGIONS = ["north", "south", "east", "west"]
# Small ensembles keep training every estimator well under a second.
FAST_HYPERPARAMETERS: dict[str, dict[str, Any]] = {
    "logistic_regression": {},
    "random_forest_classifier": {"n_estimators": 15},
    "gradient_boosting_classifier": {"n_estimators": 30},
    "linear_regression": {},
    "random_forest_regressor": {"n_estimators": 15},
    "gradient_boosting_regressor": {"n_estimators": 30},
}


def credit_risk_frame(rows: int = 400, seed: int = 0) -> pd.DataFrame:
    """Loan applicants: income, age, debt_ratio (numeric, some missing), region (categorical, some
    missing), a binary `default` label and a numeric `loss` (regression target)."""
    rng = np.random.default_rng(seed)
    income = rng.lognormal(10.5, 0.5, rows)
    age = rng.integers(18, 80, rows).astype(float)
    debt_ratio = rng.beta(2, 5, rows)
    region = rng.choice(REGIONS, rows).astype(object)
    risk = 4 * debt_ratio - np.log(income / 36_000) - 0.02 * (age - 45) + 0.8 * (region == "south")
    default = (rng.random(rows) < 1 / (1 + np.exp(-(risk - 1.2)))).astype(int)
    loss = 2_000 + 15_000 * debt_ratio + 0.05 * income + 900 * (region == "east") + rng.normal(0, 500, rows)
    for values in (income, age, debt_ratio):
        values[rng.random(rows) < 0.05] = np.nan
    region[rng.random(rows) < 0.05] = None
    features = {"income": income, "age": age, "debt_ratio": debt_ratio, "region": region}
    return pd.DataFrame(features | {"default": default, "loss": loss})


def spec_for(estimator: str, **overrides: Any) -> TrainingSpec:
    """A valid spec training `estimator` on `credit_risk_frame`, with small ensembles."""
    task = ESTIMATORS[estimator].task
    fields: dict[str, Any] = {
        "dataset_uri": "s3://flywheel/datasets/credit.csv",
        "target": "default" if task == "classification" else "loss",
        "task": task,
        "estimator": estimator,
        "hyperparameters": FAST_HYPERPARAMETERS[estimator],
        "model_name": "credit-risk",
        "feature_columns": FEATURES,
    }
    return TrainingSpec.model_validate(fields | overrides)
