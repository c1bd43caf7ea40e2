"""Every allowlisted estimator converts to ONNX, an input per column, and predicts what scikit-learn does."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pandas as pd
import pytest

from services.trainer.onnx_export import (
    LABEL_OUTPUT,
    PARITY_TOLERANCES,
    PROBABILITIES_OUTPUT,
    REGRESSION_OUTPUT,
    OnnxExportError,
    check_parity,
    to_onnx,
)
from services.trainer.pipeline import TrainedModel, train
from services.trainer.spec import ESTIMATORS
from tests.trainer_data import credit_risk_frame, spec_for


@pytest.fixture(scope="module")
def trained() -> dict[str, tuple[TrainedModel, bytes]]:
    frame = credit_risk_frame()
    models = {}
    for name in ESTIMATORS:
        model = train(spec_for(name), frame)
        models[name] = (
            model,
            to_onnx(model.pipeline, model.holdout_features, model.feature_columns, model.categorical_columns),
        )
    return models


def session(onnx_model: bytes) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(onnx_model, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_onnx_matches_scikit_learn_on_the_holdout(
    trained: dict[str, tuple[TrainedModel, bytes]], name: str
) -> None:
    model, onnx_model = trained[name]

    parity = check_parity(model.pipeline, onnx_model, model.holdout_features, ESTIMATORS[name].task)

    assert parity.passed, parity
    assert parity.rows == len(model.holdout_features) == 80
    assert parity.label_agreement == (1.0 if ESTIMATORS[name].task == "classification" else None)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_every_feature_column_is_an_input_of_its_own(
    trained: dict[str, tuple[TrainedModel, bytes]], name: str
) -> None:
    inputs = session(trained[name][1]).get_inputs()

    assert [(arg.name, arg.type, arg.shape) for arg in inputs] == [
        ("income", "tensor(float)", [None, 1]),
        ("age", "tensor(float)", [None, 1]),
        ("debt_ratio", "tensor(float)", [None, 1]),
        ("region", "tensor(string)", [None, 1]),
    ]


@pytest.mark.parametrize(
    "name", [name for name, allowed in ESTIMATORS.items() if allowed.task == "classification"]
)
def test_classifiers_output_labels_and_probabilities(
    trained: dict[str, tuple[TrainedModel, bytes]], name: str
) -> None:
    outputs = session(trained[name][1]).get_outputs()

    assert [(arg.name, arg.type, arg.shape) for arg in outputs] == [
        (LABEL_OUTPUT, "tensor(int64)", [None]),
        (PROBABILITIES_OUTPUT, "tensor(float)", [None, 2]),
    ]


@pytest.mark.parametrize(
    "name", [name for name, allowed in ESTIMATORS.items() if allowed.task == "regression"]
)
def test_regressors_output_one_value_per_row(
    trained: dict[str, tuple[TrainedModel, bytes]], name: str
) -> None:
    outputs = session(trained[name][1]).get_outputs()

    assert [(arg.name, arg.type, arg.shape) for arg in outputs] == [
        (REGRESSION_OUTPUT, "tensor(float)", [None, 1])
    ]


def test_rows_with_every_feature_missing_match_too(trained: dict[str, tuple[TrainedModel, bytes]]) -> None:
    model, onnx_model = trained["gradient_boosting_classifier"]
    blank = pd.DataFrame(
        {"income": [np.nan], "age": [np.nan], "debt_ratio": [np.nan], "region": ["missing"]}
    ).astype({"region": object})

    assert check_parity(model.pipeline, onnx_model, blank, "classification").passed


def test_an_unseen_category_is_ignored_alike(trained: dict[str, tuple[TrainedModel, bytes]]) -> None:
    model, onnx_model = trained["logistic_regression"]
    unseen = model.holdout_features.assign(region="atlantis")

    assert check_parity(model.pipeline, onnx_model, unseen, "classification").passed


def test_a_model_that_is_not_the_pipeline_fails_parity(
    trained: dict[str, tuple[TrainedModel, bytes]],
) -> None:
    model, _ = trained["random_forest_classifier"]
    _, other_onnx_model = trained["gradient_boosting_classifier"]

    parity = check_parity(model.pipeline, other_onnx_model, model.holdout_features, "classification")

    assert not parity.passed
    assert parity.max_abs_diff > parity.tolerance == PARITY_TOLERANCES["random_forest_classifier"]


def test_a_regressors_tolerance_scales_with_its_predictions(
    trained: dict[str, tuple[TrainedModel, bytes]],
) -> None:
    model, onnx_model = trained["linear_regression"]

    parity = check_parity(model.pipeline, onnx_model, model.holdout_features, "regression")

    largest = np.abs(model.pipeline.predict(model.holdout_features)).max()
    assert parity.tolerance == pytest.approx(PARITY_TOLERANCES["linear_regression"] * largest)


def test_columns_keep_names_onnx_would_not_choose() -> None:
    names = {
        "income": "income (€)",
        "age": "1st applicant age",
        "debt_ratio": "debt/ratio",
        "region": "région",
    }
    frame = credit_risk_frame().rename(columns=names)
    model = train(spec_for("logistic_regression", feature_columns=list(names.values())), frame)

    onnx_model = to_onnx(
        model.pipeline, model.holdout_features, model.feature_columns, model.categorical_columns
    )

    assert [arg.name for arg in session(onnx_model).get_inputs()] == list(names.values())
    assert check_parity(model.pipeline, onnx_model, model.holdout_features, "classification").passed


def test_a_column_named_like_an_output_is_refused() -> None:
    frame = credit_risk_frame().rename(columns={"income": "label"})
    model = train(
        spec_for("logistic_regression", feature_columns=["label", "age", "debt_ratio", "region"]), frame
    )

    with pytest.raises(OnnxExportError, match=r"feature columns \['label'\] have the names of values"):
        to_onnx(model.pipeline, model.holdout_features, model.feature_columns, model.categorical_columns)


def test_every_allowlisted_estimator_has_a_parity_tolerance() -> None:
    assert set(PARITY_TOLERANCES) == set(ESTIMATORS)


@pytest.mark.parametrize(
    "features", [["income", "age", "debt_ratio"], ["region"]], ids=["numeric", "categorical"]
)
@pytest.mark.parametrize("name", ["logistic_regression", "random_forest_regressor"])
def test_tables_of_one_kind_of_feature_convert(features: list[str], name: str) -> None:
    spec = spec_for(name, feature_columns=features)
    model = train(spec, credit_risk_frame())

    onnx_model = to_onnx(
        model.pipeline, model.holdout_features, model.feature_columns, model.categorical_columns
    )

    assert check_parity(model.pipeline, onnx_model, model.holdout_features, spec.task).passed


def test_string_labels_and_more_classes_convert() -> None:
    frame = credit_risk_frame()
    grade = pd.cut(frame["debt_ratio"].fillna(0.3), [-1, 0.2, 0.35, 2], labels=["A", "B", "C"]).astype(str)
    model = train(spec_for("random_forest_classifier"), frame.assign(default=grade))

    onnx_model = to_onnx(
        model.pipeline, model.holdout_features, model.feature_columns, model.categorical_columns
    )

    outputs = session(onnx_model).get_outputs()
    assert [(arg.name, arg.type, arg.shape) for arg in outputs] == [
        (LABEL_OUTPUT, "tensor(string)", [None]),
        (PROBABILITIES_OUTPUT, "tensor(float)", [None, 3]),
    ]
    parity = check_parity(model.pipeline, onnx_model, model.holdout_features, "classification")
    assert parity.passed
    assert parity.label_agreement == 1.0
