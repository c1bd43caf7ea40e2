"""Model performance from ground truth: labels that arrive late, by request id, joined with what the
model predicted, and judged over windows of labels (accuracy and AUC, or RMSE and MAE).

Predictions wait for their labels in a bounded map (the oldest are forgotten first: a label that comes
after its prediction was forgotten is counted as unmatched). A window's metric is compared with the
version's baseline (the policy's, or else the version's first window): a drop beyond the policy's
limit is concept drift.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from shared.events import PredictionLogged

Metric = Literal["accuracy", "auc", "rmse", "mae"]
LOWER_IS_BETTER = {"rmse", "mae"}


class PerformancePolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    window_labels: int = Field(default=500, ge=10, description="labels per performance window")
    metric: Metric | None = Field(default=None, description="default: accuracy, or rmse for regressors")
    max_drop: float = Field(
        default=0.05, ge=0, description="concept drift: the metric worse than its baseline by more than this"
    )
    baseline: float | None = Field(default=None, description="default: the version's first window")


@dataclass(frozen=True, slots=True)
class Predicted:
    model: str
    version: int
    value: Any  # the predicted label or value
    positive_probability: float | None


@dataclass
class LabelWindow:
    model: str
    version: int
    predicted: list[Any] = field(default_factory=list)
    actual: list[Any] = field(default_factory=list)
    probabilities: list[float | None] = field(default_factory=list)


class PerformanceReport(BaseModel):
    model: str
    version: int
    window_end: datetime
    labels: int
    metric: Metric
    value: float
    baseline: float
    dropped: bool


class PendingPredictions:
    """What each recent request was answered with, until its label arrives (bounded, oldest out first)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._by_request: OrderedDict[str, Predicted] = OrderedDict()

    def add(self, event: PredictionLogged, output: str) -> None:
        values = event.outputs.get(output)
        if values is None:
            return
        probabilities = event.outputs.get("probabilities")
        row = 0
        for request in event.requests:
            for offset in range(request.first_row, request.first_row + request.rows):
                request_id = request.request_id if offset == 0 else f"{request.request_id}:{offset}"
                probability = None
                if (
                    probabilities is not None
                    and isinstance(probabilities[row], list)
                    and len(probabilities[row]) == 2
                ):
                    probability = probabilities[row][1]
                self._by_request[request_id] = Predicted(event.model, event.version, values[row], probability)
                row += 1
        while len(self._by_request) > self.capacity:
            self._by_request.popitem(last=False)

    def take(self, request_id: str) -> Predicted | None:
        return self._by_request.pop(request_id, None)


def default_metric(values: list[Any]) -> Metric:
    """Accuracy for labels, RMSE for numbers that are not whole (a regressor's)."""
    numeric = all(isinstance(value, float) for value in values)
    return "rmse" if numeric and any(not float(value).is_integer() for value in values) else "accuracy"


def score(window: LabelWindow, metric: Metric) -> float:
    predicted, actual = window.predicted, window.actual
    if metric == "accuracy":
        return float(np.mean([str(p) == str(a) for p, a in zip(predicted, actual, strict=True)]))
    if metric == "auc":
        return _auc([p for p in window.probabilities if p is not None], [float(a) for a in actual])
    errors = np.asarray(predicted, dtype=np.float64) - np.asarray(actual, dtype=np.float64)
    return float(np.sqrt(np.mean(errors**2)) if metric == "rmse" else np.mean(np.abs(errors)))


def dropped(metric: Metric, value: float, baseline: float, max_drop: float) -> bool:
    worse_by = value - baseline if metric in LOWER_IS_BETTER else baseline - value
    return worse_by > max_drop


def _auc(scores: list[float], labels: list[float]) -> float:
    """The area under the ROC curve (rank statistic); NaN without both classes."""
    if len(scores) != len(labels):
        return math.nan
    order = np.argsort(scores)
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    positives = np.asarray(labels) == 1
    count_positive, count_negative = int(positives.sum()), int((~positives).sum())
    if count_positive == 0 or count_negative == 0:
        return math.nan
    return float(
        (ranks[positives].sum() - count_positive * (count_positive + 1) / 2)
        / (count_positive * count_negative)
    )
