"""Holdout metrics, for a freshly trained pipeline or for any model file on the same holdout.

Classification: accuracy, roc_auc, f1 and log_loss. For two classes the positive class is the
larger label in sorted order (1 for 0/1, "yes" for "no"/"yes"), as scikit-learn orders probability
columns; for more, roc_auc is one-vs-rest macro-averaged and f1 macro-averaged.
Regression: rmse, mae and r2.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    r2_score,
    roc_auc_score,
    root_mean_squared_error,
)

from services.trainer.dataset import prepare_features
from services.trainer.onnx_export import onnx_predictions
from services.trainer.spec import Task, TrainingSpec


def evaluate(
    task: Task, y_true: np.ndarray, predictions: np.ndarray, probabilities: np.ndarray | None
) -> dict[str, float]:
    """The task's metrics (see the module docstring) of predictions against the truth.

    Probability columns must follow the sorted classes of `y_true`, as a model fitted on data with
    those classes orders them.
    """
    if task == "regression":
        return {
            "rmse": float(root_mean_squared_error(y_true, predictions)),
            "mae": float(mean_absolute_error(y_true, predictions)),
            "r2": float(r2_score(y_true, predictions)),
        }
    if probabilities is None:
        raise ValueError("classification metrics need the class probabilities")
    classes = np.unique(y_true)
    if probabilities.shape[1] != len(classes):
        raise ValueError(
            f"the holdout has {len(classes)} classes "
            f"but the model gives {probabilities.shape[1]} probabilities"
        )
    binary = len(classes) == 2
    averaging: dict[str, Any] = {"pos_label": classes[1]} if binary else {"average": "macro"}
    return {
        "accuracy": float(accuracy_score(y_true, predictions)),
        "roc_auc": float(
            roc_auc_score(y_true, probabilities[:, 1])
            if binary
            else roc_auc_score(y_true, probabilities, multi_class="ovr", average="macro", labels=classes)
        ),
        "f1": float(f1_score(y_true, predictions, labels=classes, **averaging)),
        "log_loss": float(log_loss(y_true, probabilities, labels=classes)),
    }


def evaluate_onnx(
    onnx_model: bytes, holdout_frame: pd.DataFrame, y: np.ndarray, task: Task, spec: TrainingSpec
) -> dict[str, float]:
    """Score a model file on a holdout, e.g. the production model on a new model's holdout.

    `holdout_frame` is prepared with `spec`'s features (a no-op on already-prepared features); the
    model is fed the columns its own inputs name.
    """
    predictions, probabilities = onnx_predictions(onnx_model, prepare_features(holdout_frame, spec), task)
    return evaluate(task, y, predictions, probabilities)
