"""Training is reproducible, holds out a stratified share of rows, and searches grids by the job's metric."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.preprocessing import StandardScaler

from services.trainer.evaluation import evaluate
from services.trainer.pipeline import ESTIMATOR_STEP, PREPROCESS_STEP, build_pipeline, train
from services.trainer.spec import ESTIMATORS
from tests.trainer_data import credit_risk_frame, spec_for


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return credit_risk_frame()


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_the_same_spec_data_and_seed_give_the_same_metrics(frame: pd.DataFrame, name: str) -> None:
    spec = spec_for(name)
    first, second = train(spec, frame), train(spec, frame)

    assert evaluate(
        spec.task, first.holdout_target, first.holdout_predictions, first.holdout_probabilities
    ) == (
        evaluate(spec.task, second.holdout_target, second.holdout_predictions, second.holdout_probabilities)
    )
    np.testing.assert_array_equal(first.holdout_predictions, second.holdout_predictions)


def test_another_seed_holds_out_other_rows(frame: pd.DataFrame) -> None:
    first = train(spec_for("logistic_regression", seed=0), frame)
    second = train(spec_for("logistic_regression", seed=1), frame)

    assert set(first.holdout_features.index) != set(second.holdout_features.index)


def test_the_holdout_is_the_requested_share_with_the_classes_in_proportion(frame: pd.DataFrame) -> None:
    trained = train(spec_for("logistic_regression", holdout_fraction=0.25), frame)

    assert len(trained.holdout_features) == 100
    assert trained.holdout_target.mean() == pytest.approx(frame["default"].mean(), abs=0.01)


def test_the_estimator_is_seeded_with_the_jobs_seed(frame: pd.DataFrame) -> None:
    pipeline = build_pipeline(spec_for("random_forest_classifier", seed=42), frame)

    assert pipeline.named_steps[ESTIMATOR_STEP].random_state == 42


@pytest.mark.parametrize(
    ("name", "scaled"), [("logistic_regression", True), ("random_forest_classifier", False)]
)
def test_only_linear_models_scale_numeric_features(frame: pd.DataFrame, name: str, scaled: bool) -> None:
    numeric = build_pipeline(spec_for(name), frame).named_steps[PREPROCESS_STEP].transformers[0][1]

    assert any(isinstance(step, StandardScaler) for _, step in numeric.steps) is scaled


def test_the_result_describes_the_features_and_the_holdout(frame: pd.DataFrame) -> None:
    trained = train(spec_for("logistic_regression"), frame)

    assert trained.feature_columns == ["income", "age", "debt_ratio", "region"]
    assert trained.categorical_columns == ["region"]
    assert trained.classes == [0, 1]
    assert trained.holdout_probabilities is not None
    assert trained.holdout_probabilities.shape == (80, 2)
    assert len(trained.holdout_predictions) == 80
    assert trained.fit_seconds > 0


@pytest.mark.parametrize("metric", ["rmse", "mae", "r2"])
def test_a_grid_search_keeps_the_best_regressor_by_the_jobs_metric(frame: pd.DataFrame, metric: str) -> None:
    spec = spec_for(
        "gradient_boosting_regressor",
        hyperparameters={},
        search_space={"n_estimators": [1, 30]},
        metric=metric,
    )

    assert train(spec, frame).hyperparameters["n_estimators"] == 30


@pytest.mark.parametrize("metric", ["accuracy", "roc_auc", "log_loss"])
def test_a_grid_search_keeps_the_best_classifier_by_the_jobs_metric(frame: pd.DataFrame, metric: str) -> None:
    # Regularised this hard, logistic regression predicts little more than the prior.
    spec = spec_for("logistic_regression", search_space={"C": [1e-6, 1.0]}, metric=metric)

    assert train(spec, frame).hyperparameters == {"max_iter": 1000, "C": 1.0}


def test_a_grid_search_by_f1_takes_the_larger_label_as_the_positive_class(frame: pd.DataFrame) -> None:
    # With 1 the majority class, f1 prefers the model that predicts 1 for almost everyone; had "no"
    # been taken as positive, the same model would score 0 and lose.
    spec = spec_for("logistic_regression", search_space={"C": [1e-6, 1.0]}, metric="f1")
    words = frame.assign(default=np.where(frame["default"] == 1, "yes", "no"))

    assert (
        train(spec, words).hyperparameters
        == train(spec, frame).hyperparameters
        == {"max_iter": 1000, "C": 1e-6}
    )
