"""Experiment tracking for data scientists: a run, with its params, metrics, artifacts and models.

with flywheel.start_run(experiment="credit-risk") as run:
    run.log_params({"C": 1.0})
    run.log_metric("auc", 0.91, step=3)
    run.log_model(estimator, sample_X, registered_model_name="credit-risk")
"""

from __future__ import annotations

import mimetypes
import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from flywheel.client import RegistryClient
from flywheel.service_client import Json

# The registry's limits per log-batch call.
PARAMS_PER_CALL = 100
METRICS_PER_CALL = 1000
# Rows of the sample sent with a registration, for the registry's smoke inference.
REGISTRATION_SAMPLE_ROWS = 5
DEFAULT_PARITY_TOLERANCE = 1e-4

Item = TypeVar("Item")


@dataclass(frozen=True)
class LoggedModel:
    """Where `log_model` stored the ONNX file, its sha256, and the registered version (None if not asked)."""

    artifact_uri: str
    sha256: str
    registered_version: dict[str, Any] | None


class Run:
    """A run in progress, made by `start_run`; every `log_*` call is sent to the registry at once."""

    def __init__(self, client: RegistryClient, record: Json) -> None:
        self.client = client
        self.id: str = record["id"]
        self.name: str = record["name"]
        self.experiment_id: str = record["experiment_id"]

    def log_param(self, key: str, value: object) -> None:
        """Log one param; see `log_params`."""
        self.log_params({key: value})

    def log_params(self, params: Mapping[str, object]) -> None:
        """Log params, stored as text (`str(value)`). A param cannot change: logging a key again with
        another value raises ConflictError."""
        entries = [{"key": key, "value": str(value)} for key, value in params.items()]
        for chunk in _chunks(entries, PARAMS_PER_CALL):
            self.client.log_batch(self.id, params=chunk)

    def log_metric(self, key: str, value: float, step: int = 0) -> None:
        """Log one metric point; see `log_metrics`."""
        self.log_metrics({key: value}, step=step)

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        """Log one point per metric at `step`; a run's metric value is the one of its highest step."""
        logged_at = datetime.now(UTC).isoformat()
        points = [
            {"key": key, "value": float(value), "step": step, "timestamp": logged_at}
            for key, value in metrics.items()
        ]
        for chunk in _chunks(points, METRICS_PER_CALL):
            self.client.log_batch(self.id, metrics=chunk)

    def log_artifact(self, local_path: str | os.PathLike[str], artifact_path: str | None = None) -> Json:
        """Upload a file (streamed) as `<artifact_path>/<file name>`; returns its record (uri, sha256)."""
        path = Path(local_path)
        destination = f"{artifact_path.strip('/')}/{path.name}" if artifact_path else path.name
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        with path.open("rb") as file:
            return self.client.upload_artifact(self.id, destination, file, content_type)

    def log_model(
        self,
        estimator: Any,
        sample: Any,
        name: str = "model",
        registered_model_name: str | None = None,
        parity_tolerance: float = DEFAULT_PARITY_TOLERANCE,
    ) -> LoggedModel:
        """Convert a fitted scikit-learn estimator to ONNX, store it as the artifact `<name>/model.onnx`,
        and register it as the next version of `registered_model_name` when given, with this run as
        its lineage.

        `sample` (a numpy array or a pandas DataFrame) defines the inputs and proves the conversion:
        unless ONNX's predictions are within `parity_tolerance` of the estimator's on it, ParityError is
        raised and nothing is uploaded. Nothing is pickled.
        """
        # skl2onnx and onnxruntime take seconds to import; only this method needs them.
        from flywheel.onnx_export import export_onnx

        exported = export_onnx(estimator, sample, parity_tolerance)
        artifact = self.client.upload_artifact(self.id, f"{name}/model.onnx", exported.onnx)
        registered = None
        if registered_model_name is not None:
            registered = self.client.register_version(
                registered_model_name,
                exported.onnx,
                source_run_id=self.id,
                sample={
                    input_name: rows[:REGISTRATION_SAMPLE_ROWS].tolist()
                    for input_name, rows in exported.inputs.items()
                },
            )
        return LoggedModel(artifact["uri"], artifact["sha256"], registered)

    def end(self, status: str) -> Json:
        """End the run as `finished`, `failed` or `killed`; `start_run` does this for you."""
        return self.client.end_run(self.id, status)


@contextmanager
def start_run(
    experiment: str,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
    *,
    registry_url: str | None = None,
) -> Iterator[Run]:
    """Start a run in `experiment` (created when missing) and end it with the block: `finished`, or
    `failed` when the block raises (the error propagates), or `killed` on Ctrl-C.

    The run records the current git commit as its code version when the working directory is in a
    git repository. The registry is `registry_url`, else FLYWHEEL_REGISTRY_URL, else 127.0.0.1:8081.
    """
    with RegistryClient(registry_url) as client:
        record = client.create_run(experiment, name=run_name, tags=tags, code_version=current_git_commit())
        run = Run(client, record)
        try:
            yield run
        except KeyboardInterrupt:
            run.end("killed")
            raise
        except Exception:
            run.end("failed")
            raise
        run.end("finished")


def current_git_commit() -> str | None:
    """The commit checked out in the working directory, or None outside a git repository."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):  # no git installed, or a hung filesystem
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def _chunks(items: Sequence[Item], size: int) -> Iterator[Sequence[Item]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
