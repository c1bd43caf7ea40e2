"""The `flywheel batch` commands: score a file with a model, follow the job, download its predictions,
list and show jobs; one function per command.

Each takes the client and its parsed arguments and returns a Report, like the registry's and the
trainer's. Notes printed while a command runs (an upload, a job's progress) go to stdout, or to stderr
with `--json` so that stdout stays one JSON document. The argparse wiring is in `flywheel.cli`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TextIO

from flywheel.batch_client import BatchClient
from flywheel.errors import FlywheelError
from flywheel.job_progress import FINISHED_STATUSES, follow_job, progress_line
from flywheel.reports import Report
from flywheel.service_client import Json
from flywheel.tables import format_fields, format_table, format_timestamp

BatchCommand = Callable[[BatchClient, argparse.Namespace], Report]

INTERRUPTED_EXIT_STATUS = 130  # what a shell reports for a command stopped with Ctrl-C
REJECTIONS_SHOWN = 10


def batch_submit(client: BatchClient, arguments: argparse.Namespace) -> Report:
    """Score a local CSV/Parquet file (uploaded first) or an object URI with a model version; --follow
    shows the job's progress, --download PATH also saves its predictions there."""
    notes = _notes(arguments)
    source = Path(arguments.source)
    if source.is_file():
        if arguments.output:
            raise FlywheelError(
                "--output applies to object URIs; an uploaded file's predictions go next to it"
            )
        try:
            job = client.upload_job(
                source,
                arguments.model,
                version=arguments.version,
                alias=arguments.alias,
                features=arguments.features,
            )
        except OSError as error:  # the local file, not the service: its errors are FlywheelErrors already
            raise FlywheelError(f"cannot read {source}: {error.strerror or error}") from error
        print(f"uploaded {source} as {job['input_uri']}", file=notes)
    elif "://" in arguments.source:
        request = {
            "input_uri": arguments.source,
            "model": arguments.model,
            "version": arguments.version,
            "alias": arguments.alias,
            "output_uri": arguments.output,
            "features": arguments.features,
        }
        job = client.submit_job({key: value for key, value in request.items() if value is not None})
    else:
        raise FlywheelError(
            f"{arguments.source!r} is neither a file here nor an object URI such as "
            "s3://flywheel/data/customers.csv"
        )
    if not (arguments.follow or arguments.download):
        return _submitted(job)
    return _follow(client, job["id"], arguments, arguments.download)


def batch_follow(client: BatchClient, arguments: argparse.Namespace) -> Report:
    """Show a job's progress until it ends, then its outcome; exits 1 when the job failed."""
    return _follow(client, arguments.job_id, arguments, None)


def batch_download(client: BatchClient, arguments: argparse.Namespace) -> Report:
    """Save a succeeded job's predictions file at PATH."""
    return _download(client, arguments.job_id, Path(arguments.path))


def batch_list(client: BatchClient, arguments: argparse.Namespace) -> Report:
    """The newest file jobs, of one --model or in one --status, or all."""
    page = client.list_jobs(arguments.model, arguments.status, arguments.max)
    headers = ["id", "model", "status", "progress", "rows", "rejected", "input", "created"]
    rows = [
        (
            job["id"],
            f"{job['model']} v{job['model_version']}",
            job["status"],
            f"{round(job['progress'] * 100)}%",
            job["rows_scored"] + job["rows_rejected"],
            job["rows_rejected"],
            job["input_uri"],
            format_timestamp(job["created_at"]),
        )
        for job in page["jobs"]
    ]
    table = format_table(headers, rows)
    if page.get("next_page_token"):
        table += f"\n\nthe newest {len(rows)} shown; --max shows more (up to 1000)"
    return Report(page, table)


def batch_show(client: BatchClient, arguments: argparse.Namespace) -> Report:
    """One job: where it stands, its rows, its first rejected rows, its error or download link."""
    job = client.get_job(arguments.job_id)
    return Report(job, job_report(job))


def batch_progress_line(job: Json) -> str:
    """` 42%  running: scoring  420,000 rows (12 rejected)`."""
    rows = job["rows_scored"] + job["rows_rejected"]
    counted = f"  {rows:,} rows ({job['rows_rejected']:,} rejected)" if rows else ""
    return f"{progress_line(job)}{counted}"


def job_report(job: Json) -> str:
    """A job as people read it: its fields, then its first rejected rows."""
    which = f"v{job['model_version']}" + (f" (@{job['alias']})" if job["alias"] else "")
    fields: list[tuple[str, object]] = [
        ("job", job["id"]),
        ("model", f"{job['model']} {which}"),
        ("status", job["status"]),
    ]
    if job["status"] not in FINISHED_STATUSES:
        fields += [("stage", job["stage"]), ("progress", f"{round(job['progress'] * 100)}%")]
    fields += [
        ("input", job["input_uri"]),
        ("output", job["output_uri"]),
        ("rows", job["rows_total"]),
        ("scored", job["rows_scored"]),
        ("rejected", job["rows_rejected"]),
        ("reported", job["rows_logged"]),
    ]
    if job["features"]:
        fields.append(("features", job["features"]))
    if job["resumed_at_row"]:
        fields.append(("resumed at row", job["resumed_at_row"]))
    fields += [
        ("attempts", job["attempts"]),
        ("created", format_timestamp(job["created_at"])),
        ("finished", format_timestamp(job["finished_at"])),
    ]
    rate = _rows_per_second(job)
    if rate is not None:
        fields.append(("speed", rate))
    if job["error"]:
        fields.append(("error", job["error"]))
    if job.get("download_url"):
        fields.append(("download", job["download_url"]))
    sections = [format_fields(fields)]
    rejections = job["rejections"]
    if rejections:
        shown = format_table(
            ["row", "reason"], [(item["row"], item["reason"]) for item in rejections[:REJECTIONS_SHOWN]]
        )
        if job["rows_rejected"] > REJECTIONS_SHOWN:
            shown += f"\n\nthe first {REJECTIONS_SHOWN} of {job['rows_rejected']} rejected rows"
        sections.append(shown)
    return "\n\n".join(sections)


def _rows_per_second(job: Json) -> str | None:
    if job["status"] != "succeeded" or not job["started_at"] or not job["finished_at"]:
        return None
    seconds = (
        datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"])
    ).total_seconds()
    rows = job["rows_scored"] + job["rows_rejected"]
    return f"{seconds:.1f}s, {rows / seconds:,.0f} rows/s" if seconds > 0 else None


def _submitted(job: Json) -> Report:
    fields = [
        ("job", job["id"]),
        ("model", f"{job['model']} v{job['model_version']}"),
        ("status", job["status"]),
    ]
    return Report(job, f"{format_fields(fields)}\n\nfollow it with: flywheel batch follow {job['id']}")


def _follow(client: BatchClient, job_id: str, arguments: argparse.Namespace, download: str | None) -> Report:
    notes = _notes(arguments)
    print(f"following job {job_id} (Ctrl-C stops following, not the job)", file=notes)
    try:
        job = follow_job(client, job_id, notes, line=batch_progress_line)
    except KeyboardInterrupt:
        print(file=notes)  # end the progress bar's line
        resume = f"stopped following; the job goes on: flywheel batch follow {job_id}"
        return Report({"id": job_id}, resume, INTERRUPTED_EXIT_STATUS)
    print(file=notes)  # the outcome below stands apart from the progress above
    if job["status"] != "succeeded":
        return Report(job, job_report(job), 1)
    if download is None:
        return Report(job, job_report(job))
    return _download(client, job_id, Path(download))


def _download(client: BatchClient, job_id: str, path: Path) -> Report:
    try:
        job = client.download_output(job_id, path)
    except OSError as error:
        raise FlywheelError(f"cannot write {path}: {error.strerror or error}") from error
    text = f"{job_report(job)}\n\nsaved the predictions ({job['output_bytes']:,} bytes) at {path}"
    return Report(job, text)


def _notes(arguments: argparse.Namespace) -> TextIO:
    return sys.stderr if arguments.json else sys.stdout
