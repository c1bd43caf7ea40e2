"""Fitting a job's model: preprocessing plus the allowlisted estimator, on a seeded, stratified split.

The same spec, data and seed give the same model and the same metrics: the split, the estimator and
the cross-validation folds are all seeded or deterministic.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.metrics import f1_score, make_scorer
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from services.trainer.dataset import (
    MISSING_CATEGORY,
    categorical_columns_of,
    feature_columns_of,
    prepare_features,
)
from services.trainer.spec import ESTIMATORS, SEED_PARAMETER, Metric, TrainingSpec

PREPROCESS_STEP = "preprocess"
ESTIMATOR_STEP = "estimator"
SEARCH_FOLDS = 3

# Trees are scale-invariant, and a float32 StandardScaler in the ONNX graph moves values across split
# thresholds: with one, a random forest's ONNX probabilities differed by up to 0.08 on 38 of 400 rows.
UNSCALED_ESTIMATORS = frozenset(
    {
        "random_forest_classifier",
        "gradient_boosting_classifier",
        "random_forest_regressor",
        "gradient_boosting_regressor",
    }
)

SEARCH_SCORING: dict[Metric, str] = {
    "accuracy": "accuracy",
    "log_loss": "neg_log_loss",
    "rmse": "neg_root_mean_squared_error",
    "mae": "neg_mean_absolute_error",
    "r2": "r2",
}


@dataclass(frozen=True)
class TrainedModel:
    """A fitted pipeline with the holdout it was not fitted on and its predictions.

    Features are as `prepare_features` makes them. Probabilities are None for regression; their
    columns follow `classes` (sorted).
    """

    pipeline: Pipeline
    feature_columns: list[str]
    categorical_columns: list[str]
    classes: list[Any] | None
    holdout_features: pd.DataFrame
    holdout_target: np.ndarray
    holdout_predictions: np.ndarray
    holdout_probabilities: np.ndarray | None
    hyperparameters: dict[str, Any]
    fit_seconds: float


def build_pipeline(spec: TrainingSpec, frame: pd.DataFrame) -> Pipeline:
    """An unfitted pipeline: imputing, scaling (linear models only), one-hot encoding, then the estimator."""
    categorical = categorical_columns_of(frame, spec)
    numeric = [column for column in feature_columns_of(frame, spec) if column not in categorical]
    numeric_steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="median"))]
    if spec.estimator not in UNSCALED_ESTIMATORS:
        numeric_steps.append(("scale", StandardScaler()))
    categorical_steps = [
        # prepare_features has already turned missing values into "missing"; this step does the same for
        # "" sent at serving time (skl2onnx can only convert a string imputer of a string, not of NaN).
        ("impute", SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY, missing_values="")),
        ("encode", OneHotEncoder(handle_unknown="ignore")),
    ]
    preprocess = ColumnTransformer(
        [
            ("numeric", Pipeline(numeric_steps), numeric),
            ("categorical", Pipeline(categorical_steps), categorical),
        ]
    )
    allowed = ESTIMATORS[spec.estimator]
    estimator = allowed.estimator_class(**spec.estimator_hyperparameters())
    if SEED_PARAMETER in estimator.get_params():
        estimator.set_params(**{SEED_PARAMETER: spec.seed})
    return Pipeline([(PREPROCESS_STEP, preprocess), (ESTIMATOR_STEP, estimator)])


def train(spec: TrainingSpec, frame: pd.DataFrame) -> TrainedModel:
    """Split, fit (grid-searching `spec.search_space` by `spec.metric` when given) and predict.

    `frame` must pass `validate_for_training`.
    """
    features = prepare_features(frame, spec)
    target = frame[spec.target].to_numpy()
    classification = spec.task == "classification"
    train_features, holdout_features, train_target, holdout_target = train_test_split(
        features,
        target,
        test_size=spec.holdout_fraction,
        random_state=spec.seed,
        stratify=target if classification else None,
    )
    pipeline = build_pipeline(spec, features)
    hyperparameters = spec.estimator_hyperparameters()
    started = time.perf_counter()
    if spec.search_space is None:
        pipeline.fit(train_features, train_target)
    else:
        search = GridSearchCV(
            pipeline,
            {f"{ESTIMATOR_STEP}__{name}": values for name, values in spec.search_space.items()},
            scoring=_search_scoring(spec.metric, np.unique(train_target)),
            cv=SEARCH_FOLDS,
        )
        search.fit(train_features, train_target)
        pipeline = search.best_estimator_
        hyperparameters |= {
            name.removeprefix(f"{ESTIMATOR_STEP}__"): value for name, value in search.best_params_.items()
        }
    fit_seconds = time.perf_counter() - started
    return TrainedModel(
        pipeline=pipeline,
        feature_columns=list(features.columns),
        categorical_columns=categorical_columns_of(features, spec),
        classes=list(pipeline.classes_) if classification else None,
        holdout_features=holdout_features,
        holdout_target=holdout_target,
        holdout_predictions=pipeline.predict(holdout_features),
        holdout_probabilities=pipeline.predict_proba(holdout_features) if classification else None,
        hyperparameters=hyperparameters,
        fit_seconds=fit_seconds,
    )


def _search_scoring(metric: Metric, classes: np.ndarray) -> Any:
    """scikit-learn's scorer for `metric`, agreeing with `evaluate`'s definition of it."""
    binary = len(classes) == 2
    if metric == "roc_auc":
        return "roc_auc" if binary else "roc_auc_ovr"
    if metric == "f1":
        # The built-in "f1" scorer assumes the positive label is 1; evaluate uses the larger class.
        return make_scorer(f1_score, pos_label=classes[-1]) if binary else "f1_macro"
    return SEARCH_SCORING[metric]
