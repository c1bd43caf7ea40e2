"""Small real ONNX models for tests, converted from scikit-learn once per session."""

from __future__ import annotations

from functools import cache

import numpy as np
import pandas as pd
from skl2onnx import convert_sklearn, to_onnx
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

N_FEATURES = 4


@cache
def tiny_classifier_onnx() -> bytes:
    """A logistic regression on 4 float features: outputs `label` (INT64) and `probabilities` (FP32)."""
    generator = np.random.default_rng(7)
    features = generator.normal(size=(64, N_FEATURES)).astype(np.float32)
    labels = (features[:, 0] + features[:, 1] > 0).astype(np.int64)
    model = LogisticRegression().fit(features, labels)
    onnx_model = to_onnx(
        model, features[:1], options={id(model): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3}
    )
    return bytes(onnx_model.SerializeToString())


PER_COLUMN_FEATURES = ("income", "age", "region")


@cache
def per_column_classifier_onnx() -> bytes:
    """A scaled logistic regression with one input per column, as the trainer makes them: `income` and
    `age` (FP32, [-1, 1]) and `region` (BYTES, [-1, 1], one-hot encoded; unknown regions allowed);
    outputs `label` (INT64) and `probabilities` (FP32, [-1, 2])."""
    generator = np.random.default_rng(3)
    rows = 200
    frame = pd.DataFrame(
        {
            "income": generator.normal(50, 10, rows).astype(np.float32),
            "age": generator.integers(20, 70, rows).astype(np.float32),
            "region": generator.choice(["north", "south", "east"], rows),
        }
    )
    labels = (frame["income"] > 50).astype(np.int64)
    preparation = ColumnTransformer(
        [
            ("numbers", StandardScaler(), ["income", "age"]),
            ("regions", OneHotEncoder(handle_unknown="ignore"), ["region"]),
        ]
    )
    pipeline = Pipeline([("prepare", preparation), ("model", LogisticRegression())]).fit(frame, labels)
    onnx_model = convert_sklearn(
        pipeline,
        initial_types=[
            ("income", FloatTensorType([None, 1])),
            ("age", FloatTensorType([None, 1])),
            ("region", StringTensorType([None, 1])),
        ],
        options={id(pipeline.steps[-1][1]): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return bytes(onnx_model.SerializeToString())
