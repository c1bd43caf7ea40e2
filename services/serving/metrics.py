"""Serving's Prometheus metrics, per model and version (HTTP totals per route come from shared.telemetry)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

from shared.telemetry import PendingCounter, PendingHistogram

PREDICTIONS = Counter("flywheel_serving_predictions_total", "Rows answered", ["model", "version", "protocol"])
REQUEST_ERRORS = Counter(
    "flywheel_serving_request_errors_total", "Inference requests refused or failed", ["model", "status"]
)
INFERENCE_LATENCY = Histogram(
    "flywheel_serving_inference_seconds",
    "Time from a request's inputs being valid to its outputs (queueing and inference)",
    ["model", "version"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
BATCH_ROWS = Histogram(
    "flywheel_serving_batch_rows",
    "Rows per onnxruntime call",
    ["model", "version"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
# Summed over live worker processes when several serve the port (see shared.service.run_service).
QUEUE_DEPTH = Gauge(
    "flywheel_serving_queue_depth",
    "Requests waiting for a batch, when the last batch started",
    ["model", "version"],
    multiprocess_mode="livesum",
)
SHADOW_REQUESTS = Counter(
    "flywheel_serving_shadow_requests_total",
    "Requests mirrored to a shadow alias, by outcome (answered, failed, dropped when too many in flight)",
    ["model", "alias", "outcome"],
)


@dataclass(frozen=True)
class VersionMetrics:
    """One version's metric children, looked up once when it loads rather than on every request; those
    counted on every request are summed in the process first (`shared.telemetry.PendingCounter`)."""

    inference_seconds: PendingHistogram
    predictions: dict[str, PendingCounter]
    batch_rows: Histogram
    queue_depth: Gauge

    @classmethod
    def of(cls, model: str, version: int) -> VersionMetrics:
        labels = (model, str(version))
        return cls(
            inference_seconds=PendingHistogram(INFERENCE_LATENCY.labels(*labels)),
            predictions={
                protocol: PendingCounter(PREDICTIONS.labels(*labels, protocol)) for protocol in ("v1", "v2")
            },
            batch_rows=BATCH_ROWS.labels(*labels),
            queue_depth=QUEUE_DEPTH.labels(*labels),
        )

    @staticmethod
    def remove(model: str, version: int) -> None:
        """Forget an unloaded version's gauge (its counters and histograms stay, as Prometheus expects)."""
        QUEUE_DEPTH.remove(model, str(version))
