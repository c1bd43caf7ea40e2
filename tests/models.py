"""Small real ONNX models for tests, converted from scikit-learn once per session."""

from __future__ import annotations

from functools import cache

import numpy as np
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression

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
