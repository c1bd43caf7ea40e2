"""Flywheel's side of the benchmark, besides starting its processes: the models uploaded to the registry
as ONNX versions behind the `production` alias; serving's own account of its prediction log after each of
its cells; and afterwards the uploaded files deleted and the predictions serving logged to Kafka counted."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from minio import Minio
from prometheus_client.parser import text_string_to_metric_families

from bench.serving.workload import BenchModel
from shared.events import Topic

SERVED_ALIAS = "production"
FETCH_MAX_BYTES = 64 * 1024 * 1024
DROPPED_METRIC = "flywheel_serving_predictions_dropped_total"
BUFFERED_METRIC = "flywheel_serving_prediction_log_buffered"
DRAIN_TIMEOUT_SECONDS = 120.0


class RegistrationFailed(RuntimeError):
    """The registry refused a model upload or an alias move; the message holds its answer."""


def register_models(registry_url: str, models: list[BenchModel]) -> list[str]:
    """Upload each model's ONNX file as its first version and point `production` at it; the artifact
    URIs of the uploaded files."""
    uris = []
    with httpx.Client(base_url=registry_url, timeout=120.0) as client:
        for model in models:
            upload = ("model.onnx", model.onnx_path.read_bytes(), "application/octet-stream")
            response = client.post(f"/models/{model.name}/versions", files={"model": upload})
            if response.status_code != 201:
                raise RegistrationFailed(f"uploading {model.name}: {response.status_code} {response.text}")
            version = response.json()
            if version["status"] != "ready":
                raise RegistrationFailed(f"{model.name} version is {version['status']}: {version}")
            uris.append(version["artifact_uri"])
            moved = client.put(
                f"/models/{model.name}/aliases/{SERVED_ALIAS}", json={"version": version["version"]}
            )
            if moved.status_code != 200:
                raise RegistrationFailed(f"moving {SERVED_ALIAS} of {model.name}: {moved.text}")
    return uris


@dataclass(frozen=True)
class CellLog:
    """What serving's prediction log did in one cell: predictions it dropped (its buffer was full), the
    backlog still buffered when the load stopped, and how long publishing that backlog took."""

    dropped: int
    backlog: int
    drain_seconds: float
    drained: bool


class PredictionLogWatch:
    """Reads serving's /metrics (summed over its workers) after each of its cells, and waits until the
    prediction log is empty, so that the next server's turn does not pay for publishing it."""

    def __init__(self, serving_url: str) -> None:
        self.serving_url = serving_url
        self._dropped = self._read()[0]

    def after_cell(self) -> CellLog:
        dropped, backlog = self._read()
        started = time.monotonic()
        buffered = backlog
        while buffered > 0 and time.monotonic() - started < DRAIN_TIMEOUT_SECONDS:
            time.sleep(0.1)
            buffered = self._read()[1]
        log = CellLog(int(dropped - self._dropped), int(backlog), time.monotonic() - started, buffered <= 0)
        self._dropped = dropped
        return log

    def _read(self) -> tuple[float, float]:
        """Predictions dropped so far and predictions buffered now."""
        response = httpx.get(f"{self.serving_url}/metrics", timeout=10.0)
        response.raise_for_status()
        totals = {DROPPED_METRIC: 0.0, BUFFERED_METRIC: 0.0}
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                if sample.name in totals:
                    totals[sample.name] += sample.value
        return totals[DROPPED_METRIC], totals[BUFFERED_METRIC]


def delete_artifacts(infra: dict[str, str], uris: list[str]) -> None:
    """Delete the uploaded model files (`s3://bucket/key`), which the dropped database no longer names."""
    endpoint = urlsplit(infra["FLYWHEEL_S3_ENDPOINT"])
    client = Minio(
        endpoint.netloc,
        access_key=infra["FLYWHEEL_S3_ACCESS_KEY"],
        secret_key=infra["FLYWHEEL_S3_SECRET_KEY"],
        secure=endpoint.scheme == "https",
    )
    for uri in uris:
        location = urlsplit(uri)
        client.remove_object(location.netloc, location.path.lstrip("/"))


def count_logged_predictions(bootstrap: str, namespace: str) -> dict[str, int]:
    """The predictions (rows) in the namespace's prediction-logged topic, from its beginning to its end,
    by model."""
    return asyncio.run(_count_logged_predictions(bootstrap, f"{namespace}.{Topic.PREDICTION_LOGGED.value}"))


async def _count_logged_predictions(bootstrap: str, topic: str) -> dict[str, int]:
    predictions: dict[str, int] = {}
    partitions = [TopicPartition(topic, p) for p in await _partitions(bootstrap, topic)]
    if not partitions:
        return predictions
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_bytes=FETCH_MAX_BYTES,
        max_partition_fetch_bytes=FETCH_MAX_BYTES,
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        while [p for p in partitions if await consumer.position(p) < ends[p]]:
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                for record in records:
                    if record.value is not None:
                        for model, rows in answered_rows(orjson.loads(record.value)).items():
                            predictions[model] = predictions.get(model, 0) + rows
        return predictions
    finally:
        await consumer.stop()


def answered_rows(event: dict[str, Any]) -> dict[str, int]:
    """The rows a prediction-logged event holds that were answered to a caller (a shadow's are not), by
    model: v1 has a record per row, v2 columns with the rows of each request and the model once."""
    data = event["data"]
    rows: dict[str, int] = {}
    if event["type"] == "io.flywheel.prediction.logged.v1":
        for prediction in data["predictions"]:
            if not prediction.get("shadow", False):
                rows[prediction["model"]] = rows.get(prediction["model"], 0) + 1
    elif event["type"] == "io.flywheel.prediction.logged.v2":
        if not data.get("shadow", False):
            rows[data["model"]] = sum(request["rows"] for request in data["requests"])
    else:
        raise ValueError(f"a prediction-logged event of unknown type {event['type']!r}")
    return rows


async def _partitions(bootstrap: str, topic: str) -> list[int]:
    """The topic's partition numbers; none when it does not exist (nothing was ever logged)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (description,) = await admin.describe_topics([topic])
        return sorted(partition["partition"] for partition in description["partitions"])
    finally:
        await admin.close()
