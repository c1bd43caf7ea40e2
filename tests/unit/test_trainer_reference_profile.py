"""The reference profile describes the training data and outputs in a versioned, JSON-ready schema."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest

from services.trainer.pipeline import train
from services.trainer.profile import (
    MAX_CATEGORIES,
    MAX_SAMPLE_ROWS,
    OTHER_CATEGORY,
    QUANTILES,
    reference_profile,
)
from services.trainer.spec import TrainingSpec
from tests.trainer_data import FEATURES, credit_risk_frame, spec_for


def profile_of(frame: pd.DataFrame, spec: TrainingSpec) -> dict[str, Any]:
    trained = train(spec, frame)
    return reference_profile(frame, spec, trained.holdout_predictions, trained.holdout_probabilities)


@pytest.fixture(scope="module")
def classification_profile() -> dict[str, Any]:
    return profile_of(credit_risk_frame(), spec_for("logistic_regression"))


def test_the_profile_is_versioned_and_strict_json(classification_profile: dict[str, Any]) -> None:
    assert classification_profile["profile_version"] == 1
    assert json.loads(json.dumps(classification_profile, allow_nan=False)) == classification_profile


def test_the_profile_describes_the_table(classification_profile: dict[str, Any]) -> None:
    assert classification_profile["row_count"] == 400
    assert (classification_profile["task"], classification_profile["target"]) == ("classification", "default")
    assert classification_profile["missing_category"] == "missing"
    assert list(classification_profile["features"]) == FEATURES


def test_a_numeric_feature_has_its_range_quantiles_and_histogram(
    classification_profile: dict[str, Any],
) -> None:
    income = classification_profile["features"]["income"]
    values = credit_risk_frame()["income"]

    assert income["kind"] == "numeric"
    assert income["count"] == values.notna().sum()
    assert income["missing_rate"] == pytest.approx(values.isna().mean())
    assert (income["min"], income["max"]) == (values.min(), values.max())
    assert income["mean"] == pytest.approx(values.mean())
    assert list(income["quantiles"]) == [f"{q:g}" for q in QUANTILES]
    edges, counts = income["histogram"]["bin_edges"], income["histogram"]["counts"]
    assert len(edges) == 11
    assert edges == sorted(set(edges))
    assert sum(counts) == income["count"]


def test_a_categorical_feature_has_its_category_frequencies(classification_profile: dict[str, Any]) -> None:
    region = classification_profile["features"]["region"]

    assert region["kind"] == "categorical"
    assert set(region["frequencies"]) == {"north", "south", "east", "west"}
    assert sum(region["frequencies"].values()) == pytest.approx(1)
    assert region["missing_rate"] == pytest.approx(credit_risk_frame()["region"].isna().mean())


def test_rare_categories_are_folded_into_other() -> None:
    frame = credit_risk_frame().assign(branch=[f"branch-{index % 80}" for index in range(400)])
    spec = spec_for("logistic_regression", feature_columns=[*FEATURES, "branch"])

    frequencies = profile_of(frame, spec)["features"]["branch"]["frequencies"]

    assert len(frequencies) == MAX_CATEGORIES + 1
    assert frequencies[OTHER_CATEGORY] == pytest.approx(30 / 80)


def test_a_constant_column_gets_a_single_bin() -> None:
    frame = credit_risk_frame().assign(age=40.0)

    histogram = profile_of(frame, spec_for("logistic_regression"))["features"]["age"]["histogram"]

    assert histogram == {"bin_edges": [40.0, 40.0], "counts": [400]}


def test_the_target_and_the_outputs_of_a_classifier_are_described(
    classification_profile: dict[str, Any],
) -> None:
    target = classification_profile["target_distribution"]
    outputs = classification_profile["output_distribution"]

    assert target["frequencies"] == pytest.approx({"1": 0.5275, "0": 0.4725})
    assert outputs["positive_class"] == "1"
    assert sum(outputs["predicted_classes"].values()) == pytest.approx(1)
    assert list(outputs["probability_histograms"]) == ["1"]
    assert sum(outputs["probability_histograms"]["1"]["counts"]) == 80  # the holdout: rows not fitted on


def test_the_target_and_the_outputs_of_a_regressor_are_numeric_summaries() -> None:
    profile = profile_of(credit_risk_frame(), spec_for("linear_regression"))

    assert profile["target_distribution"]["kind"] == profile["output_distribution"]["kind"] == "numeric"
    assert profile["output_distribution"]["mean"] == pytest.approx(
        credit_risk_frame()["loss"].mean(), rel=0.05
    )


def test_the_sample_is_bounded() -> None:
    frame = credit_risk_frame(rows=MAX_SAMPLE_ROWS + 500)
    spec = spec_for("logistic_regression")
    sample = reference_profile(frame, spec, np.zeros(len(frame)), np.full((len(frame), 2), 0.5))["sample"]

    assert sample["rows"] == MAX_SAMPLE_ROWS
    assert all(len(values) == MAX_SAMPLE_ROWS for values in sample["columns"].values())


def test_the_sample_holds_every_row_of_a_small_table(classification_profile: dict[str, Any]) -> None:
    sample = classification_profile["sample"]

    assert sample["rows"] == 400
    ages = credit_risk_frame()["age"]
    assert sorted(age for age in sample["columns"]["age"] if age is not None) == sorted(ages.dropna())
    assert sample["columns"]["age"].count(None) == ages.isna().sum()


def test_the_sample_is_seeded() -> None:
    frame = credit_risk_frame(rows=3000)
    predictions, probabilities = np.zeros(len(frame)), np.full((len(frame), 2), 0.5)

    def sample(seed: int) -> dict[str, Any]:
        spec = spec_for("logistic_regression", seed=seed)
        columns: dict[str, Any] = reference_profile(frame, spec, predictions, probabilities)["sample"][
            "columns"
        ]
        return columns

    assert sample(1) == sample(1)
    assert sample(1) != sample(2)


def test_missing_values_in_the_sample_are_null_or_the_missing_category(
    classification_profile: dict[str, Any],
) -> None:
    columns = classification_profile["sample"]["columns"]

    assert None in columns["income"]
    assert "missing" in columns["region"]
