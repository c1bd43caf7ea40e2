"""Holdout metrics: the usual definitions, sensible values for every estimator, the same for a model file."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from services.trainer.evaluation import evaluate, evaluate_onnx
from services.trainer.onnx_export import to_onnx
from services.trainer.pipeline import train
from services.trainer.spec import ESTIMATORS, METRICS
from tests.trainer_data import credit_risk_frame, spec_for


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return credit_risk_frame()


def test_binary_metrics_take_the_larger_label_as_positive() -> None:
    truth = np.array(["no", "no", "yes", "yes"])
    probabilities = np.array([[0.9, 0.1], [0.4, 0.6], [0.65, 0.35], [0.2, 0.8]])

    metrics = evaluate("classification", truth, np.array(["no", "yes", "no", "yes"]), probabilities)

    assert metrics["accuracy"] == 0.5
    assert metrics["roc_auc"] == 0.75
    assert metrics["f1"] == 0.5
    assert metrics["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.4, 0.35, 0.8])))


def test_multiclass_metrics_are_macro_averaged() -> None:
    truth = np.array([0, 1, 2, 2])
    probabilities = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.6, 0.3, 0.1]])

    metrics = evaluate("classification", truth, probabilities.argmax(axis=1), probabilities)

    assert metrics["accuracy"] == 0.75
    assert metrics["f1"] == pytest.approx(np.mean([2 / 3, 1.0, 2 / 3]))
    assert 0.5 < metrics["roc_auc"] <= 1


def test_regression_metrics() -> None:
    metrics = evaluate("regression", np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.0, 3.0, 6.0]), None)

    assert metrics == {"rmse": 1.0, "mae": 0.5, "r2": pytest.approx(1 - 4 / 5)}


def test_probabilities_for_other_classes_are_refused() -> None:
    with pytest.raises(ValueError, match="the holdout has 2 classes but the model gives 3 probabilities"):
        evaluate("classification", np.array([0, 1]), np.array([0, 1]), np.full((2, 3), 1 / 3))


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_every_estimator_learns_something(frame: pd.DataFrame, name: str) -> None:
    spec = spec_for(name)
    trained = train(spec, frame)

    metrics = evaluate(
        spec.task, trained.holdout_target, trained.holdout_predictions, trained.holdout_probabilities
    )

    assert set(metrics) == set(METRICS[spec.task])
    if spec.task == "classification":
        assert 0.6 < metrics["roc_auc"] <= 1
        assert 0.55 < metrics["accuracy"] <= 1
        assert 0 < metrics["f1"] <= 1
        assert 0 < metrics["log_loss"] < np.log(2)
    else:
        assert 0.5 < metrics["r2"] <= 1
        assert 0 < metrics["mae"] <= metrics["rmse"] < frame["loss"].std()


@pytest.mark.parametrize("name", ["gradient_boosting_classifier", "random_forest_regressor"])
def test_a_model_file_scores_like_its_pipeline(frame: pd.DataFrame, name: str) -> None:
    spec = spec_for(name)
    trained = train(spec, frame)
    onnx_model = to_onnx(
        trained.pipeline, trained.holdout_features, trained.feature_columns, trained.categorical_columns
    )
    expected = evaluate(
        spec.task, trained.holdout_target, trained.holdout_predictions, trained.holdout_probabilities
    )

    metrics = evaluate_onnx(onnx_model, trained.holdout_features, trained.holdout_target, spec.task, spec)

    assert metrics == pytest.approx(expected, rel=1e-5)


def test_a_model_file_scores_raw_holdout_rows_too(frame: pd.DataFrame) -> None:
    spec = spec_for("logistic_regression")
    trained = train(spec, frame)
    onnx_model = to_onnx(
        trained.pipeline, trained.holdout_features, trained.feature_columns, trained.categorical_columns
    )
    raw = frame.loc[trained.holdout_features.index]

    metrics = evaluate_onnx(onnx_model, raw, raw["default"].to_numpy(), "classification", spec)

    assert metrics == pytest.approx(
        evaluate(
            "classification",
            trained.holdout_target,
            trained.holdout_predictions,
            trained.holdout_probabilities,
        ),
        rel=1e-5,
    )
