"""Features reach every model the same way: floats with NaN, strings with "missing"."""

from __future__ import annotations

import numpy as np
import pandas as pd

from services.trainer.dataset import (
    MISSING_CATEGORY,
    categorical_columns_of,
    feature_columns_of,
    prepare_features,
)
from tests.trainer_data import FEATURES, credit_risk_frame, spec_for

SPEC = spec_for("logistic_regression")


def test_missing_categories_become_the_missing_category() -> None:
    frame = pd.DataFrame(
        {"region": ["north", None, "", np.nan], "income": [1.0, 2.0, 3.0, 4.0], "default": 0}
    )

    prepared = prepare_features(frame, spec_for("logistic_regression", feature_columns=["region", "income"]))

    assert prepared["region"].tolist() == ["north", MISSING_CATEGORY, MISSING_CATEGORY, MISSING_CATEGORY]


def test_numeric_features_become_float64_and_keep_nan() -> None:
    frame = pd.DataFrame({"age": pd.array([30, None, 41], dtype="Int64"), "region": "north", "default": 0})

    prepared = prepare_features(frame, spec_for("logistic_regression", feature_columns=["age", "region"]))

    assert prepared["age"].dtype == np.float64
    assert np.isnan(prepared["age"].iloc[1])


def test_the_features_default_to_every_column_but_the_target() -> None:
    frame = credit_risk_frame().drop(columns="loss")

    assert feature_columns_of(frame, spec_for("logistic_regression", feature_columns=None)) == FEATURES


def test_categorical_columns_default_to_the_non_numeric_features() -> None:
    assert categorical_columns_of(credit_risk_frame(), SPEC) == ["region"]


def test_a_numeric_column_listed_as_categorical_becomes_text() -> None:
    frame = pd.DataFrame({"branch": [12, 7], "income": [1.0, 2.0], "default": [0, 1]})

    prepared = prepare_features(
        frame,
        spec_for("logistic_regression", feature_columns=["branch", "income"], categorical_columns=["branch"]),
    )

    assert prepared["branch"].tolist() == ["12", "7"]


def test_preparing_prepared_features_changes_nothing() -> None:
    prepared = prepare_features(credit_risk_frame(), SPEC)

    pd.testing.assert_frame_equal(prepare_features(prepared, SPEC), prepared)
