"""The models under test and the requests they answer: two scikit-learn classifiers trained on the same
fixed-seed synthetic data (20 float features, two classes), as ONNX files for Flywheel, the hand-built app
and the in-process ceiling, and as joblib pickles for MLflow."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib  # type: ignore[import-untyped]
import numpy as np
import orjson
from skl2onnx import to_onnx
from sklearn.base import ClassifierMixin
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

FEATURES = 20
TRAINING_ROWS = 10_000
SEED = 20261124
# Written with six decimals in every request: what a client would send, and the same for every server.
REQUEST_DECIMALS = 6


@dataclass(frozen=True)
class ModelKind:
    key: str
    title: str
    build: Callable[[], ClassifierMixin]


# The trainer's defaults for forests (services/trainer/spec.py: min_samples_leaf 20, 100 trees).
MODEL_KINDS = {
    "rf": ModelKind(
        "rf",
        "random forest (100 trees, min_samples_leaf=20)",
        lambda: RandomForestClassifier(n_estimators=100, min_samples_leaf=20, random_state=SEED, n_jobs=1),
    ),
    "lr": ModelKind("lr", "logistic regression", lambda: LogisticRegression(max_iter=1000)),
}


@dataclass(frozen=True)
class BenchModel:
    """One trained model and its files; `rows` are the request rows (rounded as sent), `labels` what
    scikit-learn predicts for them."""

    kind: ModelKind
    onnx_path: Path
    pickle_path: Path
    rows: np.ndarray
    labels: list[int]

    @property
    def name(self) -> str:
        return self.kind.key


def training_data() -> tuple[np.ndarray, np.ndarray]:
    features, target = make_classification(
        n_samples=TRAINING_ROWS, n_features=FEATURES, n_informative=10, n_redundant=4, random_state=SEED
    )
    return features.astype(np.float32), target


def build_models(keys: list[str], request_rows: int, directory: Path) -> list[BenchModel]:
    """Train each model, write `<key>.onnx` and `<key>.joblib` into `directory`, and keep `request_rows`
    held-out rows for the requests."""
    features, target = training_data()
    rows = np.round(features[-request_rows:], REQUEST_DECIMALS).astype(np.float32)
    train_features, train_target = features[:-request_rows], target[:-request_rows]
    models = []
    for key in keys:
        kind = MODEL_KINDS[key]
        estimator = kind.build().fit(train_features, train_target)
        onnx_model = to_onnx(
            estimator,
            train_features[:1],
            options={id(estimator): {"zipmap": False}},
            target_opset={"": 17, "ai.onnx.ml": 3},
        )
        onnx_path = directory / f"{key}.onnx"
        onnx_path.write_bytes(onnx_model.SerializeToString())
        pickle_path = directory / f"{key}.joblib"
        joblib.dump(estimator, pickle_path)
        labels = [int(label) for label in estimator.predict(rows)]
        models.append(BenchModel(kind, onnx_path, pickle_path, rows, labels))
    return models


def load_rows() -> np.ndarray:
    """The distinct rows the load sends (every row of the synthetic data, rounded as sent), cycled over by
    the requests and by the in-process ceiling alike.

    Distinct, not one body sent again and again: a loop over the same 100 rows lets this machine's CPU
    learn the forest's branches for them (0.9 µs a row on two threads against 5.5-6 for rows it has not
    seen), which no server sees in production and no server under load could reach."""
    features, _ = training_data()
    return np.round(features, REQUEST_DECIMALS).astype(np.float32)


def instances_body(rows: np.ndarray) -> bytes:
    """`{"instances": [[...20 floats...], ...]}`: Flywheel's v1 route and the hand-built app."""
    return orjson.dumps({"instances": _rounded(rows)})


def mlflow_inputs_body(rows: np.ndarray) -> bytes:
    """`{"inputs": [[...], ...]}`: MLflow's tensor input, its fastest form (no pandas DataFrame)."""
    return orjson.dumps({"inputs": _rounded(rows)})


def _rounded(rows: np.ndarray) -> list[list[Any]]:
    return [[round(float(value), REQUEST_DECIMALS) for value in row] for row in rows]
