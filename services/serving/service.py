"""Answering predictions: resolve the version, validate the request against its signature, infer through
the version's batcher, log every prediction, and say which version answered."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.serving.metrics import INFERENCE_LATENCY, PREDICTIONS
from services.serving.models import LoadedModel, ModelStore
from services.serving.prediction_log import PredictionLog
from services.serving.protocol import (
    Tensors,
    encode_v1_predictions,
    encode_v2_response,
    parse_v1_instances,
    parse_v2_request,
)
from shared.events import PredictionRecord


@dataclass(frozen=True)
class Answer:
    body: dict[str, Any]
    model: LoadedModel
    request_id: str


class InferenceService:
    def __init__(self, models: ModelStore, predictions: PredictionLog, default_alias: str) -> None:
        self.models = models
        self.predictions = predictions
        self.default_alias = default_alias

    async def infer_v2(self, name: str, body: bytes, version: int | None, request_id: str | None) -> Answer:
        """An Open Inference Protocol request; InvalidInput (422) names what does not fit the model."""
        model = await self.models.resolve(name, version=version, alias=self.default_alias)
        inputs, meta = parse_v2_request(body, model.signature)
        request_id = request_id or meta.request_id or uuid.uuid4().hex
        outputs = await self._predict(model, inputs, request_id, "v2")
        response = encode_v2_response(
            model.name, str(model.version), outputs, model.signature, request_id, meta.requested_outputs
        )
        return Answer(response, model, request_id)

    async def predict_v1(self, name: str, body: bytes, request_id: str | None) -> Answer:
        """`{"instances": [...]}` in, predictions (labels and probabilities) out."""
        model = await self.models.resolve(name, alias=self.default_alias)
        inputs = parse_v1_instances(body, model.signature)
        request_id = request_id or uuid.uuid4().hex
        outputs = await self._predict(model, inputs, request_id, "v1")
        response = encode_v1_predictions(outputs)
        response.update(model_name=model.name, model_version=str(model.version), id=request_id)
        return Answer(response, model, request_id)

    async def _predict(self, model: LoadedModel, inputs: Tensors, request_id: str, protocol: str) -> Tensors:
        started = time.perf_counter()
        outputs = await model.predict(inputs)
        seconds = time.perf_counter() - started
        version = str(model.version)
        INFERENCE_LATENCY.labels(model.name, version).observe(seconds)
        PREDICTIONS.labels(model.name, version, protocol).inc(len(next(iter(inputs.values()))))
        latency_ms = seconds * 1000
        self.predictions.record_many(prediction_records(model, inputs, outputs, request_id, latency_ms))
        return outputs


def prediction_records(
    model: LoadedModel, inputs: Tensors, outputs: Tensors, request_id: str, latency_ms: float
) -> list[PredictionRecord]:
    """One record per row; a request of several rows gets request ids `<id>:<row>` after its first row."""
    rows = len(next(iter(inputs.values())))
    per_column = all(array.ndim == 2 and array.shape[1] == 1 for array in inputs.values())
    records = []
    for row in range(rows):
        features: dict[str, Any] | list[Any] = (
            {name: _scalar(array[row, 0]) for name, array in inputs.items()}
            if per_column
            else [_scalar(value) for value in next(iter(inputs.values()))[row].ravel()]
        )
        records.append(
            PredictionRecord(
                request_id=request_id if row == 0 else f"{request_id}:{row}",
                model=model.name,
                version=model.version,
                features=features,
                outputs={name: _scalar_or_list(array[row]) for name, array in outputs.items()},
                latency_ms=latency_ms,
            )
        )
    return records


def _scalar(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _scalar_or_list(value: Any) -> Any:
    return value.tolist() if isinstance(value, np.ndarray) else _scalar(value)
