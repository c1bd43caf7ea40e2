"""log_model's conversion to ONNX and its parity check, without any server."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from flywheel.errors import FlywheelError, ParityError
from flywheel.onnx_export import export_onnx

TOLERANCE = 1e-4


def run_onnx(model: bytes, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(None, inputs), strict=True))


def features(rows: int = 80) -> np.ndarray:
    return np.random.default_rng(3).normal(size=(rows, 4))


def test_a_numpy_logistic_regression_becomes_one_float_input_with_matching_probabilities() -> None:
    x = features()
    estimator = LogisticRegression().fit(x, (x[:, 0] + x[:, 1] > 0).astype(int))

    exported = export_onnx(estimator, x, TOLERANCE)

    assert list(exported.inputs) == ["X"]
    assert exported.inputs["X"].dtype == np.float32
    outputs = run_onnx(exported.onnx, exported.inputs)
    assert outputs["probabilities"].shape == (80, 2)  # a tensor, not ZipMap's list of dicts
    assert np.abs(outputs["probabilities"] - estimator.predict_proba(x)).max() <= TOLERANCE
    assert exported.max_difference <= TOLERANCE


def test_a_pipeline_on_a_dataframe_becomes_one_input_per_column_numeric_as_float_others_as_strings() -> None:
    generator = np.random.default_rng(5)
    frame = pd.DataFrame(
        {
            "income": generator.normal(50, 10, size=60),
            "age": generator.integers(18, 80, size=60),
            "city": generator.choice(["paris", "lyon", "nice"], size=60),
        }
    )
    labels = ((frame["income"] > 50) & (frame["city"] != "nice")).astype(int)
    pipeline = Pipeline(
        [
            (
                "prepare",
                ColumnTransformer(
                    [
                        ("scaled", StandardScaler(), ["income", "age"]),
                        ("encoded", OneHotEncoder(handle_unknown="ignore"), ["city"]),
                    ]
                ),
            ),
            ("classify", LogisticRegression()),
        ]
    ).fit(frame, labels)

    exported = export_onnx(pipeline, frame, TOLERANCE)

    assert {name: array.dtype for name, array in exported.inputs.items()} == {
        "income": np.float32,
        "age": np.float32,
        "city": object,
    }
    assert exported.inputs["city"].shape == (60, 1)
    probabilities = run_onnx(exported.onnx, exported.inputs)["probabilities"]
    assert np.abs(probabilities - pipeline.predict_proba(frame)).max() <= TOLERANCE


def test_a_regressor_is_compared_on_predict() -> None:
    x = features()
    estimator = RandomForestRegressor(n_estimators=5, random_state=0).fit(x, x[:, 0] * 3 - x[:, 2])

    exported = export_onnx(estimator, x, TOLERANCE)

    predictions = run_onnx(exported.onnx, exported.inputs)["variable"]
    assert np.abs(predictions.ravel() - estimator.predict(x)).max() <= TOLERANCE
    assert exported.max_difference <= TOLERANCE


def test_a_zero_tolerance_fails_on_float32_rounding_with_a_parity_error_naming_difference_and_tolerance() -> (
    None
):
    x = features()
    estimator = LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))

    with pytest.raises(ParityError) as raised:
        export_onnx(estimator, x, tolerance=0.0)

    assert isinstance(raised.value, FlywheelError)
    message = str(raised.value)
    assert "differ from LogisticRegression's by up to" in message
    assert "the tolerance is 0" in message


def test_onnx_predictions_far_from_the_estimator_raise_a_parity_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x = features()
    estimator = LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))
    real_run = ort.InferenceSession.run

    def shifted(
        self: ort.InferenceSession, names: list[str], feed: dict[str, np.ndarray]
    ) -> list[np.ndarray]:
        return [output + 0.25 for output in real_run(self, names, feed)]

    monkeypatch.setattr(ort.InferenceSession, "run", shifted)

    with pytest.raises(ParityError, match=r"by up to 0\.25 on the sample; the tolerance is 0\.0001"):
        export_onnx(estimator, x, TOLERANCE)


def test_a_sample_that_is_not_a_table_is_refused() -> None:
    x = features()
    estimator = LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))

    with pytest.raises(ValueError, match="must be 2-D"):
        export_onnx(estimator, x[0], TOLERANCE)
