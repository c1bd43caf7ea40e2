"""Data validation reports every reason a table cannot be trained on, all at once."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from services.trainer.dataset import validate_for_training
from services.trainer.spec import TrainingSpec
from tests.trainer_data import credit_risk_frame, spec_for

CLASSIFIER = spec_for("logistic_regression")
REGRESSOR = spec_for("linear_regression")


def with_column(column: str, values: object) -> Callable[[pd.DataFrame], pd.DataFrame]:
    return lambda frame: frame.assign(**{column: values})


def with_rare_class(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[frame.index[:3], "default"] = 7
    return frame


def with_missing_target(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[frame.index[:4], "default"] = np.nan
    return frame


@pytest.mark.parametrize(
    ("change", "spec", "expected"),
    [
        pytest.param(lambda frame: frame.iloc[:0], CLASSIFIER, "the dataset has no rows", id="empty"),
        pytest.param(
            lambda frame: frame.drop(columns="default"),
            CLASSIFIER,
            "target column 'default' is not in",
            id="no-target",
        ),
        pytest.param(
            lambda frame: frame.drop(columns=["age"]),
            CLASSIFIER,
            "feature columns missing from the dataset: 'age'",
            id="no-feature",
        ),
        pytest.param(
            lambda frame: frame.iloc[:8], CLASSIFIER, "the dataset has 8 rows; at least 10", id="few-rows"
        ),
        pytest.param(
            with_column("default", 0),
            CLASSIFIER,
            "has 1 class(es); classification needs at least 2",
            id="one-class",
        ),
        pytest.param(
            with_rare_class,
            CLASSIFIER,
            "classes with fewer than 5 rows (needed for a holdout of 0.2): 7 (3)",
            id="rare-class",
        ),
        pytest.param(
            with_missing_target, CLASSIFIER, "the target 'default' is missing in 4 rows", id="missing-target"
        ),
        pytest.param(
            with_column("loss", "high"),
            REGRESSOR,
            "the target 'loss' must be numeric for regression",
            id="text-target",
        ),
        pytest.param(
            with_column("income", np.nan),
            CLASSIFIER,
            "feature columns with no values at all: 'income'",
            id="empty-feature",
        ),
        pytest.param(
            with_column("age", "young"),
            spec_for("logistic_regression", categorical_columns=["region"]),
            "not numeric but not listed as categorical: 'age'",
            id="text-in-numeric-feature",
        ),
    ],
)
def test_each_problem_is_reported(
    change: Callable[[pd.DataFrame], pd.DataFrame], spec: TrainingSpec, expected: str
) -> None:
    problems = validate_for_training(change(credit_risk_frame()), spec)

    assert any(expected in problem for problem in problems), problems


@pytest.mark.parametrize("spec", [CLASSIFIER, REGRESSOR], ids=["classification", "regression"])
def test_a_good_table_has_no_problems(spec: TrainingSpec) -> None:
    assert validate_for_training(credit_risk_frame(), spec) == []


def test_every_problem_is_reported_at_once() -> None:
    frame = credit_risk_frame().drop(columns=["age"]).assign(income=np.nan, default=1)

    problems = validate_for_training(frame, CLASSIFIER)

    assert len(problems) == 3, problems


def test_a_larger_holdout_needs_fewer_rows_per_class() -> None:
    problems = validate_for_training(
        with_rare_class(credit_risk_frame()), spec_for("logistic_regression", holdout_fraction=0.5)
    )

    assert problems == []
