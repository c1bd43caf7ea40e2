"""The training spec accepts what the trainer can do and rejects the rest with a useful message."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from services.trainer.spec import ESTIMATORS, MAX_SEARCH_COMBINATIONS, TrainingSpec

BASE: dict[str, Any] = {
    "dataset_uri": "s3://flywheel/datasets/credit.csv",
    "target": "default",
    "task": "classification",
    "estimator": "logistic_regression",
    "model_name": "credit-risk",
}


def spec(**overrides: Any) -> TrainingSpec:
    return TrainingSpec.model_validate(BASE | overrides)


def rejection(**overrides: Any) -> str:
    with pytest.raises(ValidationError) as raised:
        spec(**overrides)
    return str(raised.value)


def test_the_metric_defaults_to_roc_auc_for_classification() -> None:
    assert spec().metric == "roc_auc"


def test_the_metric_defaults_to_rmse_for_regression() -> None:
    assert spec(task="regression", estimator="linear_regression", target="loss").metric == "rmse"


def test_the_defaults_are_a_fifth_held_out_and_seed_zero() -> None:
    defaults = spec()

    assert (defaults.holdout_fraction, defaults.seed, defaults.hyperparameters) == (0.2, 0, {})


def test_an_unknown_estimator_is_rejected_with_the_allowlist() -> None:
    message = rejection(estimator="svm")

    assert "unknown estimator 'svm'" in message
    assert all(name in message for name in ESTIMATORS)


def test_an_estimator_of_the_other_task_is_rejected() -> None:
    assert "is for regression, not classification" in rejection(estimator="random_forest_regressor")


def test_a_metric_of_the_other_task_is_rejected() -> None:
    assert "metric 'rmse' does not apply to classification" in rejection(metric="rmse")


def test_an_unknown_metric_is_rejected() -> None:
    assert "metric" in rejection(metric="precision")


def test_an_unknown_hyperparameter_is_named_with_the_allowed_ones() -> None:
    message = rejection(hyperparameters={"max_iters": 10})

    assert "unknown hyperparameter 'max_iters' for LogisticRegression" in message
    assert "allowed: C, class_weight," in message


def test_random_state_is_the_seed_not_a_hyperparameter() -> None:
    assert "comes from the job's `seed`" in rejection(hyperparameters={"random_state": 3})


def test_hyperparameters_override_the_estimators_defaults() -> None:
    assert spec().estimator_hyperparameters() == {"max_iter": 1000}
    overridden = spec(hyperparameters={"max_iter": 50, "C": 0.5})

    assert overridden.estimator_hyperparameters() == {"max_iter": 50, "C": 0.5}


def test_a_search_space_parameter_must_exist() -> None:
    assert "unknown search_space parameter 'depth'" in rejection(search_space={"depth": [1, 2]})


def test_a_search_over_too_many_combinations_is_rejected() -> None:
    message = rejection(search_space={"C": list(range(1, 11)), "tol": [1e-4, 1e-3, 1e-2, 1e-1, 1, 10]})

    assert f"60 combinations; at most {MAX_SEARCH_COMBINATIONS}" in message


def test_a_search_of_the_largest_allowed_size_is_accepted() -> None:
    assert spec(search_space={"C": list(range(1, 11)), "tol": [1e-4, 1e-3, 1e-2, 1e-1, 1]}).search_space


def test_a_hyperparameter_cannot_be_both_fixed_and_searched() -> None:
    assert "both fixed" in rejection(hyperparameters={"C": 1.0}, search_space={"C": [0.1, 1.0]})


def test_a_searched_parameter_needs_values() -> None:
    assert "no values for ['C']" in rejection(search_space={"C": []})


@pytest.mark.parametrize("fraction", [0, -0.1, 0.51, 1])
def test_the_holdout_fraction_must_be_above_zero_and_at_most_a_half(fraction: float) -> None:
    assert "holdout_fraction" in rejection(holdout_fraction=fraction)


def test_the_target_cannot_be_a_feature() -> None:
    assert "cannot also be a feature" in rejection(feature_columns=["income", "default"])


def test_categorical_columns_must_be_features() -> None:
    assert "['city'] are not among feature_columns" in rejection(
        feature_columns=["income", "region"], categorical_columns=["region", "city"]
    )


def test_unknown_fields_are_rejected() -> None:
    assert "learning_rate" in rejection(learning_rate=0.1)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_every_allowlisted_estimator_takes_a_spec_of_its_task(name: str) -> None:
    task = ESTIMATORS[name].task

    assert spec(estimator=name, task=task).estimator == name
