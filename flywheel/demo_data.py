"""Synthetic credit-risk data: the data set `flywheel demo` tells its story with, and the one the tests
train on. One place for it, so that the demo and the end-to-end test drive the same loop.

`credit_risk_frame` is the applicants a first model learns from; `shifted_credit_frame` the newer ones
whose arrival in production is the drift (and whose data a retrained model learns from)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

FEATURES = ["income", "age", "debt_ratio", "region"]
REGIONS = ["north", "south", "east", "west"]
TARGET = "default"


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


def shifted_credit_frame(rows: int, seed: int) -> pd.DataFrame:
    """Newer applicants: poorer, older, more indebted, mostly from the west, and a risk that now depends
    on the west where it used to depend on the south (so a model trained on them beats the old one). Every
    value stays inside the old training range, so the trainer's check of new data lets it train."""
    rng = np.random.default_rng(seed)
    income = rng.lognormal(10.1, 0.5, rows)
    age = rng.integers(35, 80, rows).astype(float)
    debt_ratio = rng.beta(4, 4, rows)
    region = rng.choice(REGIONS, rows, p=[0.1, 0.1, 0.1, 0.7]).astype(object)
    risk = 3 * debt_ratio - np.log(income / 36_000) - 0.03 * (age - 45) + 1.5 * (region == "west")
    default = (rng.random(rows) < 1 / (1 + np.exp(-(risk - 2.5)))).astype(int)
    loss = 2_000 + 15_000 * debt_ratio + 0.05 * income + rng.normal(0, 500, rows)
    return pd.DataFrame(
        {"income": income, "age": age, "debt_ratio": debt_ratio, "region": region}
        | {"default": default, "loss": loss}
    )


def complete_rows(make: Callable[[int, int], pd.DataFrame], rows: int, seed: int) -> pd.DataFrame:
    """`rows` rows of `make(rows, seed)`'s kind without missing values: live traffic as a caller sends it
    (serving refuses missing values; a caller imputes them)."""
    complete = make(2 * rows + 100, seed).dropna().head(rows)
    if len(complete) < rows:
        raise ValueError(f"only {len(complete)} complete rows of {rows}")
    return complete.reset_index(drop=True)
