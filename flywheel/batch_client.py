"""A small synchronous client for the batch service's file jobs: submit (an object URI, or a local file
uploaded as it is read), look at, list, and download the predictions through the job's presigned link.

Every method returns the server's JSON as plain dicts; errors become the exceptions in `flywheel.errors`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from flywheel.errors import FlywheelError
from flywheel.service_client import (
    DEFAULT_TIMEOUT_SECONDS,
    Json,
    ServiceAddress,
    ServiceClient,
    page_params,
    path_segment,
)

BATCH = ServiceAddress("batch service", "--batch-url", "FLYWHEEL_BATCH_URL", "http://127.0.0.1:8083")


class BatchClient(ServiceClient):
    """The batch service over HTTP. Use as a context manager, or call `close()`, to release connections."""

    address = BATCH

    def __init__(self, base_url: str | None = None, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        super().__init__(base_url, timeout)

    def submit_job(self, request: dict[str, Any]) -> Json:
        """Queue a job on an object in the platform's store: {"input_uri", "model", "version" or "alias",
        "output_uri", "features"} (only the first two are needed). The job, queued."""
        return self._send("POST", "/jobs", json=request)

    def upload_job(
        self,
        path: str | Path,
        model: str,
        *,
        version: int | None = None,
        alias: str | None = None,
        features: list[str] | None = None,
    ) -> Json:
        """Upload a local CSV or Parquet file (streamed, not read into memory) and queue a job on it; its
        predictions are written next to it. The job, queued."""
        file_path = Path(path)
        params: dict[str, Any] = {"filename": file_path.name, "model": model}
        optional = {"version": version, "alias": alias, "features": features}
        params |= {key: value for key, value in optional.items() if value is not None}
        with file_path.open("rb") as content:
            return self._send(
                "POST",
                "/jobs/upload",
                params=params,
                content=content,
                headers={"content-type": "application/octet-stream"},
            )

    def get_job(self, job_id: str) -> Json:
        """A job's status, progress, row counts, first rejected rows, error, and download link once done."""
        return self._get(f"/jobs/{path_segment(job_id)}")

    def list_jobs(
        self,
        model: str | None = None,
        status: str | None = None,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> Json:
        """One page of jobs, newest first: {"jobs": [...], "next_page_token": ...}."""
        filters = {key: value for key, value in (("model", model), ("status", status)) if value}
        return self._get("/jobs", params=filters | page_params(page_size, page_token))

    def download_output(self, job_id: str, destination: str | Path) -> Json:
        """Save a succeeded job's predictions file at `destination` (written whole or not at all); the job.
        A job that has not succeeded is a FlywheelError saying where it stands."""
        job = self.get_job(job_id)
        if job["status"] != "succeeded" or not job.get("download_url"):
            detail = f": {job['error']}" if job.get("error") else ""
            raise FlywheelError(f"job {job_id} has no output to download: it is {job['status']}{detail}")
        target = Path(destination)
        descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=".download-")
        try:
            with os.fdopen(descriptor, "wb") as file:
                _fetch(job["download_url"], file, self._timeout)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return job

    @property
    def _timeout(self) -> httpx.Timeout:
        return self._http.timeout


def _fetch(url: str, file: Any, timeout: httpx.Timeout) -> None:
    """Copy what `url` names into `file`: an http(s) link streamed, or a local file:// path (the
    embedded mode's artifacts)."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        with Path(unquote(parts.path)).open("rb") as source:
            shutil.copyfileobj(source, file)
        return
    try:
        with httpx.stream("GET", url, timeout=timeout) as response:
            if response.is_error:
                raise FlywheelError(
                    f"downloading the output answered {response.status_code}: {response.read()[:300]!r}",
                    response.status_code,
                )
            for chunk in response.iter_bytes():
                file.write(chunk)
    except httpx.TransportError as error:
        raise FlywheelError(f"the output's download link did not answer: {error}") from error
