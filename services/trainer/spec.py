"""The training job contract: which estimator to fit on which table, with which settings.

Only allowlisted scikit-learn estimators can be trained, and their hyperparameters are checked by
name against the estimator's own `get_params()`, so a typo fails at submission, not after the data
is loaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sklearn.base import BaseEstimator
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LinearRegression, LogisticRegression

Task = Literal["classification", "regression"]
Metric = Literal["accuracy", "roc_auc", "f1", "log_loss", "rmse", "mae", "r2"]

METRICS: dict[Task, tuple[Metric, ...]] = {
    "classification": ("accuracy", "roc_auc", "f1", "log_loss"),
    "regression": ("rmse", "mae", "r2"),
}
DEFAULT_METRIC: dict[Task, Metric] = {"classification": "roc_auc", "regression": "rmse"}
LOWER_IS_BETTER: frozenset[Metric] = frozenset({"rmse", "mae", "log_loss"})

MAX_SEARCH_COMBINATIONS = 50
SEED_PARAMETER = "random_state"


@dataclass(frozen=True)
class AllowedEstimator:
    """One estimator the trainer may fit: its task, its class and the settings it starts from."""

    task: Task
    estimator_class: type[BaseEstimator]
    default_hyperparameters: dict[str, Any]

    def parameter_names(self) -> list[str]:
        """The hyperparameters a job may set (the seed is the job's `seed`, never a hyperparameter)."""
        return sorted(name for name in self.estimator_class().get_params() if name != SEED_PARAMETER)


# Fully grown trees grow with the data: at 100,000 rows a default 100-tree forest is a 109 MB model that
# takes 2.9 GB to convert (about 20 GB per million rows). Leaves of at least 20 rows keep it to 13 MB and
# 0.65 GB, and scored as well on our credit-risk benchmark. Jobs can still set their own.
FOREST_DEFAULTS: dict[str, Any] = {"min_samples_leaf": 20}

ESTIMATORS: dict[str, AllowedEstimator] = {
    "logistic_regression": AllowedEstimator("classification", LogisticRegression, {"max_iter": 1000}),
    "random_forest_classifier": AllowedEstimator("classification", RandomForestClassifier, FOREST_DEFAULTS),
    "gradient_boosting_classifier": AllowedEstimator("classification", GradientBoostingClassifier, {}),
    "linear_regression": AllowedEstimator("regression", LinearRegression, {}),
    "random_forest_regressor": AllowedEstimator("regression", RandomForestRegressor, FOREST_DEFAULTS),
    "gradient_boosting_regressor": AllowedEstimator("regression", GradientBoostingRegressor, {}),
}


def estimator_name_of(estimator: BaseEstimator) -> str:
    """The allowlist name of a fitted or unfitted estimator, e.g. "random_forest_classifier"."""
    for name, allowed in ESTIMATORS.items():
        if type(estimator) is allowed.estimator_class:
            return name
    raise ValueError(f"{type(estimator).__name__} is not an allowlisted estimator")


class TrainingSpec(BaseModel):
    """What to train: the data, the target, the estimator and how to choose and check it."""

    model_config = ConfigDict(extra="forbid")

    dataset_uri: str = Field(min_length=1, description="CSV (.csv, .csv.gz) or Parquet (.parquet, .pq)")
    target: str = Field(min_length=1, description="the column to predict")
    task: Task
    estimator: str = Field(description=f"one of: {', '.join(ESTIMATORS)}")
    hyperparameters: dict[str, Any] = Field(
        default_factory=dict, description='estimator settings over its defaults, e.g. {"n_estimators": 200}'
    )
    search_space: dict[str, list[Any]] | None = Field(
        default=None,
        description=f"grid search over these values (3-fold CV, chosen by `metric`); "
        f"at most {MAX_SEARCH_COMBINATIONS} combinations",
    )
    # When left out, a before-validator sets the task's default; this one is what the schema shows.
    metric: Metric = Field(
        default=DEFAULT_METRIC["classification"],
        description="roc_auc by default for classification, rmse for regression; rmse, mae and log_loss "
        "are lower-is-better",
    )
    holdout_fraction: float = Field(
        default=0.2, gt=0, le=0.5, description="share of rows held out for evaluation"
    )
    seed: int = Field(default=0, description="seeds the split, the estimator and the profile's sample")
    model_name: str = Field(min_length=1, description="the registry model the trained version belongs to")
    feature_columns: list[str] | None = Field(default=None, description="default: every column except target")
    categorical_columns: list[str] | None = Field(
        default=None, description="default: the feature columns whose type is not numeric"
    )

    @model_validator(mode="before")
    @classmethod
    def _metric_defaults_to_the_tasks(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("metric") is None and data.get("task") in DEFAULT_METRIC:
            return {**data, "metric": DEFAULT_METRIC[data["task"]]}
        return data

    @model_validator(mode="after")
    def _check_consistency(self) -> TrainingSpec:
        allowed = ESTIMATORS.get(self.estimator)
        if allowed is None:
            raise ValueError(f"unknown estimator {self.estimator!r}; allowed: {', '.join(ESTIMATORS)}")
        if allowed.task != self.task:
            raise ValueError(f"estimator {self.estimator!r} is for {allowed.task}, not {self.task}")
        if self.metric not in METRICS[self.task]:
            raise ValueError(
                f"metric {self.metric!r} does not apply to {self.task}; "
                f"use one of {', '.join(METRICS[self.task])}"
            )
        _check_parameter_names(self.hyperparameters, allowed, "hyperparameter")
        if self.search_space is not None:
            _check_search_space(self.search_space, self.hyperparameters, allowed)
        if self.feature_columns is not None:
            if self.target in self.feature_columns:
                raise ValueError(f"the target {self.target!r} cannot also be a feature column")
            if len(set(self.feature_columns)) != len(self.feature_columns):
                raise ValueError("feature_columns lists a column more than once")
            if self.categorical_columns is not None:
                outside = sorted(set(self.categorical_columns) - set(self.feature_columns))
                if outside:
                    raise ValueError(f"categorical columns {outside} are not among feature_columns")
        return self

    def estimator_hyperparameters(self) -> dict[str, Any]:
        """The estimator's settings: the allowlist defaults overridden by the job's hyperparameters."""
        return {**ESTIMATORS[self.estimator].default_hyperparameters, **self.hyperparameters}


def _check_parameter_names(names: dict[str, Any], allowed: AllowedEstimator, what: str) -> None:
    if SEED_PARAMETER in names:
        raise ValueError(f"{what} {SEED_PARAMETER!r} cannot be set: it comes from the job's `seed`")
    known = allowed.parameter_names()
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(
            f"unknown {what} {', '.join(map(repr, unknown))} for {allowed.estimator_class.__name__}; "
            f"allowed: {', '.join(known)}"
        )


def _check_search_space(
    search_space: dict[str, list[Any]], hyperparameters: dict[str, Any], allowed: AllowedEstimator
) -> None:
    if not search_space:
        raise ValueError("search_space is empty; leave it out to train without a search")
    _check_parameter_names(search_space, allowed, "search_space parameter")
    both = sorted(set(search_space) & set(hyperparameters))
    if both:
        raise ValueError(f"{both} are both fixed in hyperparameters and searched in search_space")
    empty = sorted(name for name, values in search_space.items() if not values)
    if empty:
        raise ValueError(f"search_space gives no values for {empty}")
    combinations = math.prod(len(values) for values in search_space.values())
    if combinations > MAX_SEARCH_COMBINATIONS:
        raise ValueError(
            f"search_space has {combinations} combinations; at most {MAX_SEARCH_COMBINATIONS} are allowed"
        )
