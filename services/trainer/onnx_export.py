"""Converting a fitted pipeline to ONNX, feeding it, and proving it predicts what scikit-learn predicts.

The graph has one input per feature column, named after the column, shaped [None, 1]: float32 for
numeric columns, string for categorical ones (values as `prepare_features` makes them). Outputs, as
skl2onnx names them:

- classifiers (ZipMap disabled): "label", shape [None], int64 for integer or boolean classes and
  string for string classes; "probabilities", float32 [None, n_classes], columns in sorted class order;
- regressors: "variable", float32 [None, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime
import pandas as pd
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.base import is_classifier
from sklearn.pipeline import Pipeline

from services.trainer.spec import Task, estimator_name_of

LABEL_OUTPUT = "label"
PROBABILITIES_OUTPUT = "probabilities"
REGRESSION_OUTPUT = "variable"
# Opsets every onnxruntime the platform supports (>= 1.18) can run.
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
SMOKE_TEST_ROWS = 100

# Largest |ONNX - scikit-learn| accepted on the holdout. Classifiers: on probabilities. Regressors:
# relative to the largest |prediction| on the holdout (float32 keeps ~7 significant digits, so the
# error grows with the target's scale), never below REGRESSION_ABSOLUTE_FLOOR. Measured maxima, on the
# unit tests' 80-row holdout / on a 20,000-row holdout of 100,000 rows x 20 features:
#   logistic_regression 6.6e-8 / 8.4e-7; random_forest_classifier 4.8e-8 / 4.0e-7 (100 trees);
#   gradient_boosting_classifier 6.6e-8 / 1.4e-7; relative to the largest prediction:
#   linear_regression 6.3e-8 / 4.8e-7; random_forest_regressor 1.1e-7 / 1.2e-7 (20 trees);
#   gradient_boosting_regressor 7.6e-8 / 1.5e-7. Every tolerance leaves a margin of 100 or more.
PARITY_TOLERANCES: dict[str, float] = {
    "logistic_regression": 1e-4,
    "random_forest_classifier": 1e-4,
    "gradient_boosting_classifier": 1e-4,
    "linear_regression": 1e-4,
    "random_forest_regressor": 1e-4,
    "gradient_boosting_regressor": 1e-4,
}
REGRESSION_ABSOLUTE_FLOOR = 1e-3


class OnnxExportError(RuntimeError):
    """The pipeline cannot be turned into an ONNX model the platform can serve; the message says why."""


@dataclass(frozen=True)
class ParityReport:
    """How closely ONNX Runtime reproduced scikit-learn on `rows` holdout rows.

    `tolerance` is the absolute bound applied to `max_abs_diff` (for regressors, the relative
    tolerance already scaled). `label_agreement` (classification only) is informative, not judged:
    where scikit-learn's probabilities tie (a forest of 100 trees split 50/50), float32 sums break the
    tie either way; that was 1% of rows for such a forest on 100,000 rows.
    """

    max_abs_diff: float
    tolerance: float
    passed: bool
    label_agreement: float | None
    rows: int


def to_onnx(
    pipeline: Pipeline, frame_sample: pd.DataFrame, feature_columns: list[str], categorical_columns: list[str]
) -> bytes:
    """Convert a fitted pipeline to serialised ONNX, then run it once on `frame_sample`'s first rows."""
    categorical = set(categorical_columns)
    initial_types = [
        (column, StringTensorType([None, 1]) if column in categorical else FloatTensorType([None, 1]))
        for column in feature_columns
    ]
    estimator = pipeline.steps[-1][1]
    classifier = is_classifier(estimator)
    options = {id(estimator): {"zipmap": False}} if classifier else None
    model = convert_sklearn(pipeline, initial_types=initial_types, options=options, target_opset=TARGET_OPSET)
    _restore_input_names(model, feature_columns)
    serialised: bytes = model.SerializeToString()
    try:
        onnx_predictions(
            serialised, frame_sample.head(SMOKE_TEST_ROWS), "classification" if classifier else "regression"
        )
    except Exception as error:  # onnxruntime raises its own error types; any of them means unservable
        raise OnnxExportError(f"the converted model does not run in onnxruntime: {error}") from error
    return serialised


def _restore_input_names(model: onnx.ModelProto, feature_columns: list[str]) -> None:
    """Give inputs back their columns' names, which skl2onnx rewrites as C identifiers ("a b" -> "a_b")."""
    graph = model.graph
    renames = {
        graph_input.name: column for graph_input, column in zip(graph.input, feature_columns, strict=True)
    }
    renames = {old: new for old, new in renames.items() if old != new}
    computed = {name for node in graph.node for name in node.output} | {
        tensor.name for tensor in graph.initializer
    }
    clashes = sorted(set(renames.values()) & computed)
    if clashes:
        raise OnnxExportError(
            f"feature columns {clashes} have the names of values the model computes (such as its outputs "
            f"{LABEL_OUTPUT!r}, {PROBABILITIES_OUTPUT!r}, {REGRESSION_OUTPUT!r}); rename them"
        )
    for graph_input in graph.input:
        graph_input.name = renames.get(graph_input.name, graph_input.name)
    for node in graph.node:
        node.input[:] = [renames.get(name, name) for name in node.input]


def onnx_inputs(
    frame: pd.DataFrame, feature_columns: list[str], categorical_columns: list[str]
) -> dict[str, np.ndarray]:
    """The model's feed from a frame as `prepare_features` makes it: one [rows, 1] array per column."""
    categorical = set(categorical_columns)
    return {
        column: (
            frame[column].to_numpy(dtype=object).astype(str).astype(object)
            if column in categorical
            else frame[column].to_numpy(dtype=np.float32, na_value=np.nan)
        ).reshape(-1, 1)
        for column in feature_columns
    }


def onnx_predictions(
    onnx_model: bytes, frame: pd.DataFrame, task: Task
) -> tuple[np.ndarray, np.ndarray | None]:
    """Run the model on prepared features: (predicted labels or values, class probabilities or None)."""
    session = onnxruntime.InferenceSession(onnx_model, providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    feed = onnx_inputs(
        frame, [arg.name for arg in inputs], [arg.name for arg in inputs if arg.type == "tensor(string)"]
    )
    names = [arg.name for arg in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, feed), strict=True))
    if task == "regression":
        return np.asarray(outputs[names[0]]).reshape(-1), None
    if LABEL_OUTPUT not in outputs or PROBABILITIES_OUTPUT not in outputs:
        raise ValueError(
            f"a classifier must output {LABEL_OUTPUT!r} and {PROBABILITIES_OUTPUT!r} (zipmap disabled); "
            f"this one outputs {names}"
        )
    return np.asarray(outputs[LABEL_OUTPUT]), np.asarray(outputs[PROBABILITIES_OUTPUT])


def check_parity(
    pipeline: Pipeline,
    onnx_model: bytes,
    holdout_frame: pd.DataFrame,
    task: Task,
    tolerance: float | None = None,
) -> ParityReport:
    """Compare ONNX Runtime with scikit-learn on every holdout row.

    `tolerance` defaults to PARITY_TOLERANCES for the pipeline's estimator; for regressors it is relative.
    """
    allowed_tolerance = (
        PARITY_TOLERANCES[estimator_name_of(pipeline.steps[-1][1])] if tolerance is None else tolerance
    )
    onnx_output, onnx_probabilities = onnx_predictions(onnx_model, holdout_frame, task)
    rows = len(holdout_frame)
    if onnx_probabilities is not None:
        expected_labels = pipeline.predict(holdout_frame)
        difference = _max_abs_diff(onnx_probabilities, pipeline.predict_proba(holdout_frame))
        label_agreement = float(np.mean(onnx_output == expected_labels)) if rows else 1.0
        return ParityReport(
            difference, allowed_tolerance, difference <= allowed_tolerance, label_agreement, rows
        )
    expected = pipeline.predict(holdout_frame)
    scale = float(np.max(np.abs(expected))) if rows else 0.0
    bound = max(REGRESSION_ABSOLUTE_FLOOR, allowed_tolerance * scale)
    difference = _max_abs_diff(onnx_output, expected)
    return ParityReport(difference, bound, difference <= bound, None, rows)


def _max_abs_diff(actual: np.ndarray, expected: np.ndarray) -> float:
    if actual.size == 0:
        return 0.0
    return float(np.max(np.abs(actual.astype(np.float64) - np.asarray(expected, dtype=np.float64))))
