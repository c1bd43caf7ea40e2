"""New training data is checked against the production model's profile before a retrain."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from services.trainer.pipeline import train
from services.trainer.profile import check_against_profile, reference_profile
from tests.trainer_data import credit_risk_frame, spec_for

SPEC = spec_for("logistic_regression")


@pytest.fixture(scope="module")
def profile() -> dict[str, Any]:
    frame = credit_risk_frame()
    trained = train(SPEC, frame)
    return reference_profile(frame, SPEC, trained.holdout_predictions, trained.holdout_probabilities)


@pytest.fixture
def new_data() -> pd.DataFrame:
    return credit_risk_frame(seed=7)


def test_new_data_like_the_old_passes(profile: dict[str, Any], new_data: pd.DataFrame) -> None:
    assert check_against_profile(new_data, profile, SPEC) == []


def test_a_shifted_column_is_flagged(profile: dict[str, Any], new_data: pd.DataFrame) -> None:
    problems = check_against_profile(new_data.assign(income=new_data["income"] * 100), profile, SPEC)

    assert len(problems) == 1
    assert problems[0].startswith("column 'income' has 100% of its values outside the training range")


def test_a_slightly_shifted_column_passes(profile: dict[str, Any], new_data: pd.DataFrame) -> None:
    assert check_against_profile(new_data.assign(income=new_data["income"] * 1.5), profile, SPEC) == []


def test_a_missing_column_is_flagged(profile: dict[str, Any], new_data: pd.DataFrame) -> None:
    spec = spec_for("logistic_regression", feature_columns=None)

    problems = check_against_profile(new_data.drop(columns=["age", "loss"]), profile, spec)

    assert problems == ["columns the production model was trained on are missing: 'age'"]


def test_a_column_the_spec_leaves_out_is_not_missing(profile: dict[str, Any], new_data: pd.DataFrame) -> None:
    spec = spec_for("logistic_regression", feature_columns=["income", "debt_ratio", "region"])

    assert check_against_profile(new_data.drop(columns=["age"]), profile, spec) == []


def test_a_new_class_is_flagged(profile: dict[str, Any], new_data: pd.DataFrame) -> None:
    new_data.loc[new_data.index[:20], "default"] = 2

    assert check_against_profile(new_data, profile, SPEC) == ["classes the production model never saw: ['2']"]


def test_a_class_gone_from_the_data_is_flagged(profile: dict[str, Any], new_data: pd.DataFrame) -> None:
    problems = check_against_profile(new_data.assign(default=1), profile, SPEC)

    assert problems == ["classes of the training data absent from the new data: ['0']"]


def test_a_column_that_changed_kind_is_flagged(profile: dict[str, Any], new_data: pd.DataFrame) -> None:
    problems = check_against_profile(new_data.assign(age=new_data["age"].astype(str)), profile, SPEC)

    assert problems == ["column 'age' was numeric in the training data and is categorical now"]


@pytest.mark.parametrize("column", ["debt_ratio", "region"])
def test_a_jump_in_missing_values_is_flagged(
    profile: dict[str, Any], new_data: pd.DataFrame, column: str
) -> None:
    new_data.loc[new_data.index[::2], column] = np.nan

    problems = check_against_profile(new_data, profile, SPEC)

    assert len(problems) == 1
    assert problems[0].startswith(f"column {column!r} is missing in 5")
