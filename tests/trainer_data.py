"""Synthetic credit-risk data for the trainer's tests (unit and integration): the data set itself lives in
`flywheel.demo_data`, shared with `flywheel demo`; here, what only the tests need."""

from __future__ import annotations

from typing import Any

from flywheel.demo_data import FEATURES, REGIONS, credit_risk_frame
from services.trainer.spec import ESTIMATORS, TrainingSpec

__all__ = ["FAST_HYPERPARAMETERS", "FEATURES", "REGIONS", "credit_risk_frame", "spec_for"]

# Small ensembles keep training every estimator well under a second.
FAST_HYPERPARAMETERS: dict[str, dict[str, Any]] = {
    "logistic_regression": {},
    "random_forest_classifier": {"n_estimators": 15},
    "gradient_boosting_classifier": {"n_estimators": 30},
    "linear_regression": {},
    "random_forest_regressor": {"n_estimators": 15},
    "gradient_boosting_regressor": {"n_estimators": 30},
}


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
