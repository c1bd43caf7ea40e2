"""File jobs as callers see them: submitted (checked first, so that a job that cannot run is refused at
once), uploaded, listed and looked at, with a download link once done. The runner does the scoring."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable

import asyncpg

from services.batch import job_repository
from services.batch.file_jobs import CONTENT_TYPES, SUFFIXES, FileFormat, file_format, predictions_key
from services.batch.job_schemas import DEFAULT_ALIAS, FileJob, FileJobPage, FileJobRequest, ModelChoice
from services.batch.scoring import DescribeVersion, takes_feature_inputs
from shared.artifacts import ArtifactNotFound, ArtifactStore, InvalidArtifactKey, validate_key
from shared.artifacts.workspaces import visible_to, workspace_key
from shared.events import ModelSignature
from shared.model_versions import ModelNotFound, VersionRecord
from shared.pagination import decode_page_token, next_page_token

log = logging.getLogger(__name__)

UPLOADS_PREFIX = "batch/uploads"  # in the job's workspace's prefix
PARQUET_MAGIC = b"PAR1"


class JobNotFound(LookupError):
    pass


class InputNotFound(LookupError):
    """No object at the job's input URI (or not one of the caller's workspace)."""


class OutputNotFound(LookupError):
    """The job's output URI is not in the caller's workspace (another workspace's reads as missing)."""


class UnsupportedFormat(ValueError):
    """The file is not CSV or Parquet (by its name, or by its first bytes)."""


class InvalidJob(ValueError):
    """The job cannot run as asked: a URI outside the store, features that do not fit the model, ..."""


class OutputInUse(Exception):
    """Another queued or running job writes the same output."""


class FileJobService:
    def __init__(
        self,
        database: asyncpg.Pool,
        artifacts: ArtifactStore,
        describe_version: DescribeVersion,
        *,
        chunk_rows: int,
        on_submitted: Callable[[], None],
    ) -> None:
        self.database = database
        self.artifacts = artifacts
        self.describe_version = describe_version
        self.chunk_rows = chunk_rows
        self.on_submitted = on_submitted  # wakes the runner

    async def submit_job(self, request: FileJobRequest, workspace: str | None = None) -> FileJob:
        """Queue a job on an object in the store; the model version is fixed now (an alias is read once).
        A model, an input or an output of another `workspace` than the caller's (None: any) reads as
        missing."""
        record = await self._version(request, workspace)
        input_key = self._key(request.input_uri, "input_uri")
        input_format = _format(input_key)
        try:
            if not visible_to(input_key, workspace):
                raise ArtifactNotFound(input_key)
            await self.artifacts.stat(input_key)
        except ArtifactNotFound as error:
            raise InputNotFound(f"no object at {request.input_uri}") from error
        if request.output_uri is None:
            output_key = predictions_key(input_key)
        else:
            output_key = self._key(request.output_uri, "output_uri")
            if not visible_to(output_key, workspace):
                raise OutputNotFound(f"output_uri {request.output_uri} is not in this workspace's store")
            if file_format(output_key) != input_format:
                raise InvalidJob(
                    f"output_uri {request.output_uri!r} must name a {input_format} file like the input "
                    f"({', '.join(suffix for suffix, fmt in SUFFIXES.items() if fmt == input_format)})"
                )
            if output_key == input_key:
                raise InvalidJob("output_uri is the input itself; the input is never overwritten")
        return await self._queue(request, record, input_key, output_key, input_format)

    async def upload_job(
        self, filename: str, content: AsyncIterable[bytes], choice: ModelChoice, workspace: str | None = None
    ) -> FileJob:
        """Store a CSV or Parquet body (streamed) under the model's workspace's batch/uploads/ and queue a
        job on it. The model and the file's name are checked before the body is read."""
        upload_format = _format(filename)
        try:
            if "/" in filename:
                raise InvalidArtifactKey(filename)
            upload_key = validate_key(f"{UPLOADS_PREFIX}/{uuid.uuid4().hex}/{filename}")
        except InvalidArtifactKey as error:
            raise InvalidJob(f"filename {filename!r} is not a plain file name") from error
        record = await self._version(choice, workspace)
        key = workspace_key(record.workspace, upload_key)
        stored = await self.artifacts.put_stream(
            key, _sniffed(content, upload_format, filename), CONTENT_TYPES[upload_format]
        )
        request = FileJobRequest(input_uri=stored.uri, **choice.model_dump())
        return await self._queue(request, record, key, predictions_key(key), upload_format)

    async def get_job(self, job_id: str, workspace: str | None = None) -> FileJob:
        """The job, if it is `workspace`'s (None: any's), with a presigned download link to its output once
        it succeeded."""
        async with self.database.acquire() as connection:
            job = await job_repository.get_job(connection, job_id, workspace)
        if job is None:
            raise JobNotFound(f"no file job {job_id!r}")
        if job.status == "succeeded":
            key = self.artifacts.key_from_uri(job.output_uri)
            job.download_url = await self.artifacts.presigned_url(key)
        return job

    async def list_jobs(
        self,
        model: str | None,
        status: str | None,
        page_size: int,
        page_token: str | None,
        workspace: str | None = None,
    ) -> FileJobPage:
        """Jobs of `workspace` (None: every one), newest first, optionally of one model or in one status."""
        offset = decode_page_token(page_token)
        async with self.database.acquire() as connection:
            jobs = await job_repository.list_jobs(connection, model, status, page_size + 1, offset, workspace)
        return FileJobPage(
            jobs=jobs[:page_size], next_page_token=next_page_token(offset, page_size, len(jobs))
        )

    async def _version(self, choice: ModelChoice, workspace: str | None) -> VersionRecord:
        """The version the job will use, its signature checked against the job's features; raises
        ModelNotFound (also for a model of another workspace), RegistryUnavailable or InvalidJob."""
        alias = None if choice.version is not None else choice.alias or DEFAULT_ALIAS
        record = await self.describe_version(choice.model, choice.version, alias)
        if record is not None and workspace not in (None, record.workspace):
            record = None
        if record is None:
            which = f"v{choice.version}" if choice.version is not None else f"@{alias}"
            raise ModelNotFound(f"no model version {choice.model} {which} (or it failed registration)")
        _check_features(record.signature, choice.features, f"{record.name} v{record.version}")
        return record

    def _key(self, uri: str, field: str) -> str:
        try:
            return self.artifacts.key_from_uri(uri)
        except InvalidArtifactKey as error:
            raise InvalidJob(f"{field}: {error}") from error

    async def _queue(
        self,
        request: FileJobRequest,
        record: VersionRecord,
        input_key: str,
        output_key: str,
        input_format: FileFormat,
    ) -> FileJob:
        job_id = uuid.uuid4().hex
        output_uri = self.artifacts.uri(output_key)
        try:
            async with self.database.acquire() as connection:
                job = await job_repository.insert_job(
                    connection,
                    job_id=job_id,
                    model=record.name,
                    model_version=record.version,
                    alias=None if request.version is not None else request.alias or DEFAULT_ALIAS,
                    input_uri=self.artifacts.uri(input_key),
                    output_uri=output_uri,
                    file_format=input_format,
                    features=request.features,
                    chunk_rows=self.chunk_rows,
                    workspace=record.workspace,
                )
        except job_repository.OutputTaken as error:
            async with self.database.acquire() as connection:
                other = await job_repository.job_writing(connection, output_uri)
            raise OutputInUse(
                f"job {other} is already writing {output_uri}; wait for it, or give another output_uri"
            ) from error
        log.info(
            "file job queued",
            extra={"job_id": job_id, "model": record.name, "version": record.version, "input": job.input_uri},
        )
        self.on_submitted()
        return job


def _format(name: str) -> FileFormat:
    found = file_format(name)
    if found is None:
        raise UnsupportedFormat(
            f"{name!r} is not a CSV or Parquet file: its name must end in {', '.join(SUFFIXES)}"
        )
    return found


def _check_features(signature: ModelSignature, features: list[str] | None, version: str) -> None:
    """The job's features against the model's inputs: refused when the model takes columns by name, or
    when their number is not the width of its single input."""
    shapes = ", ".join(f"{spec.name} {spec.shape}" for spec in signature.inputs)
    if takes_feature_inputs(signature):
        if features is not None:
            raise InvalidJob(
                f"{version} has one input per feature ({shapes}) and takes the file's columns of those "
                "names; do not list features"
            )
        return
    if len(signature.inputs) != 1 or len(signature.inputs[0].shape) != 2:
        raise InvalidJob(f"{version}'s inputs ({shapes}) cannot be fed from a table's columns")
    width = signature.inputs[0].shape[1]
    if features is not None and width != -1 and len(features) != width:
        raise InvalidJob(f"{version}'s input {shapes} takes {width} features; {len(features)} listed")


async def _sniffed(
    content: AsyncIterable[bytes], upload_format: FileFormat, filename: str
) -> AsyncIterator[bytes]:
    """The body, refused (UnsupportedFormat) when its first bytes say it is not what its name says."""
    head = b""
    checked = False
    async for chunk in content:
        if not checked:
            head += chunk
            if len(head) < len(PARQUET_MAGIC):
                continue
            _check_head(head, upload_format, filename)
            checked, chunk = True, head
        yield chunk
    if not checked:
        if head or upload_format == "parquet":
            _check_head(head, upload_format, filename)
        yield head


def _check_head(head: bytes, upload_format: FileFormat, filename: str) -> None:
    is_parquet = head.startswith(PARQUET_MAGIC)
    if upload_format == "parquet" and not is_parquet:
        raise UnsupportedFormat(f"{filename!r} is not a Parquet file (it does not start with PAR1)")
    if upload_format == "csv" and (is_parquet or b"\0" in head[:4096]):
        raise UnsupportedFormat(f"{filename!r} is not CSV text (it holds binary data)")
