"""Convert a fitted scikit-learn estimator to ONNX, and prove the conversion predicts what it does.

skl2onnx converts; onnxruntime then runs the result on the caller's sample, and its output is
compared with `predict_proba` (classifiers) or `predict` (regressors). Nothing is pickled.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort
from skl2onnx import convert_sklearn, to_onnx
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.base import is_classifier

from flywheel.errors import ParityError


@dataclass(frozen=True)
class ExportedModel:
    """The ONNX bytes, the sample as the model's named inputs, and how far ONNX strayed on it."""

    onnx: bytes
    inputs: dict[str, np.ndarray]
    max_difference: float


def export_onnx(estimator: Any, sample: Any, tolerance: float) -> ExportedModel:
    """Convert a fitted `estimator` to ONNX and check it on `sample` (rows it was trained on or will score).

    A numpy array becomes one input `X` (float32 when the array holds floats); a pandas DataFrame becomes
    one input per column (numeric columns as float32, any other as strings). Raises ParityError when
    ONNX's predictions differ from the estimator's by more than `tolerance` anywhere on the sample.
    """
    if _is_dataframe(sample):
        model, inputs = _convert_dataframe(estimator, sample)
    else:
        model, inputs = _convert_array(estimator, np.asarray(sample))
    max_difference = _max_difference(estimator, sample, model, inputs)
    if not max_difference <= tolerance:  # written so that a NaN difference fails too
        raise ParityError(
            f"the ONNX model's predictions differ from {type(estimator).__name__}'s by up to "
            f"{max_difference:.3g} on the sample; the tolerance is {tolerance:g}"
        )
    return ExportedModel(model, inputs, max_difference)


def _is_dataframe(sample: Any) -> bool:
    # A DataFrame cannot exist without pandas imported, so pandas need not be installed otherwise.
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(sample, pandas.DataFrame)


def _options(estimator: Any) -> dict[str, Any] | None:
    # Classifiers output a plain probability tensor instead of skl2onnx's default list of dicts
    # (ZipMap), which the platform cannot serve; other estimators reject the option.
    return {"zipmap": False} if is_classifier(estimator) else None


def _convert_array(estimator: Any, sample: np.ndarray) -> tuple[bytes, dict[str, np.ndarray]]:
    if sample.ndim != 2:
        raise ValueError(f"the sample must be 2-D (rows x features); it has shape {sample.shape}")
    features = sample.astype(np.float32) if np.issubdtype(sample.dtype, np.floating) else sample
    model = to_onnx(estimator, features[:1], options=_options(estimator))
    input_name = model.graph.input[0].name
    return model.SerializeToString(), {input_name: features}


def _convert_dataframe(estimator: Any, frame: Any) -> tuple[bytes, dict[str, np.ndarray]]:
    from pandas.api.types import is_numeric_dtype

    initial_types: list[tuple[str, Any]] = []
    inputs: dict[str, np.ndarray] = {}
    for column in frame.columns:
        name = str(column)
        if is_numeric_dtype(frame[column]):
            initial_types.append((name, FloatTensorType([None, 1])))
            inputs[name] = frame[[column]].to_numpy(dtype=np.float32)
        else:
            initial_types.append((name, StringTensorType([None, 1])))
            inputs[name] = frame[[column]].astype(str).to_numpy(dtype=object)
    model = convert_sklearn(estimator, initial_types=initial_types, options=_options(estimator))
    return model.SerializeToString(), inputs


def _max_difference(estimator: Any, sample: Any, model: bytes, inputs: dict[str, np.ndarray]) -> float:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    output_names = [output.name for output in session.get_outputs()]
    if is_classifier(estimator) and hasattr(estimator, "predict_proba"):
        expected = np.asarray(estimator.predict_proba(sample))
        # skl2onnx names the probability tensor "probabilities"; it follows the label otherwise.
        output = "probabilities" if "probabilities" in output_names else output_names[-1]
    else:
        expected = np.asarray(estimator.predict(sample))
        output = output_names[0]
    actual = np.asarray(session.run([output], inputs)[0])
    if actual.size != expected.size:
        raise ParityError(
            f"the ONNX model's output {output!r} has shape {actual.shape}; "
            f"the estimator's has shape {expected.shape}"
        )
    actual = actual.reshape(expected.shape)
    if expected.dtype.kind not in "biuf":  # labels such as strings: equal, or not at all
        return 0.0 if np.array_equal(actual.astype(expected.dtype), expected) else math.inf
    return float(np.max(np.abs(actual.astype(np.float64) - expected), initial=0.0))
