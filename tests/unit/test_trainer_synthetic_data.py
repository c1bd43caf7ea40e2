"""The synthetic credit-risk data has the properties the trainer's tests rely on."""

from __future__ import annotations

import pandas as pd

from tests.trainer_data import FEATURES, credit_risk_frame


def test_the_data_has_missing_values_in_every_feature() -> None:
    frame = credit_risk_frame()

    assert all(frame[column].isna().any() for column in FEATURES)


def test_the_data_is_the_same_for_the_same_seed() -> None:
    pd.testing.assert_frame_equal(credit_risk_frame(seed=3), credit_risk_frame(seed=3))


def test_the_label_has_both_classes_in_useful_numbers() -> None:
    share = credit_risk_frame()["default"].mean()

    assert 0.2 < share < 0.8
