"""A small synchronous client for the trainer's REST API: datasets, training jobs and retrain requests.

Every method returns the server's JSON as plain dicts; errors become the exceptions in `flywheel.errors`,
exactly as for the registry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flywheel.service_client import (
    DEFAULT_TIMEOUT_SECONDS,
    Json,
    ServiceAddress,
    ServiceClient,
    page_params,
    path_segment,
)

TRAINER = ServiceAddress("trainer", "--trainer-url", "FLYWHEEL_TRAINER_URL", "http://127.0.0.1:8082")


class TrainerClient(ServiceClient):
    """The trainer over HTTP. Use as a context manager, or call `close()`, to release the connections."""

    address = TRAINER

    def __init__(self, base_url: str | None = None, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        super().__init__(base_url, timeout)

    def upload_dataset(self, path: str | Path) -> Json:
        """Store a local CSV or Parquet file for training, streamed rather than read into memory:
        {"uri", "sha256", "size"}. The file's name (its suffix says the format) is kept."""
        file_path = Path(path)
        with file_path.open("rb") as content:
            return self._send(
                "POST",
                "/datasets",
                params={"filename": file_path.name},
                content=content,
                headers={"content-type": "application/octet-stream"},
            )

    def submit_job(self, request: dict[str, Any]) -> Json:
        """Queue a training job (a training spec plus `experiment` and `promotion`): the job, queued."""
        return self._send("POST", "/jobs", json=request)

    def get_job(self, job_id: str) -> Json:
        """A job's status, stage, progress, run, and its result or the reasons it failed."""
        return self._get(f"/jobs/{path_segment(job_id)}")

    def list_jobs(
        self, model: str | None = None, page_size: int = 100, page_token: str | None = None
    ) -> Json:
        """One page of jobs, newest first, of one model or all: {"jobs": [...], "next_page_token": ...}."""
        model_filter = {"model": model} if model else {}
        return self._get("/jobs", params=model_filter | page_params(page_size, page_token))

    def retrain(self, model: str, reason: str = "manual", dataset_uri: str | None = None) -> Json:
        """Retrain `model` with the configuration behind its production version, on `dataset_uri` when
        given: the new job, or the one already queued or running for the model."""
        return self._send(
            "POST", "/retrain", json={"model": model, "reason": reason, "dataset_uri": dataset_uri}
        )
