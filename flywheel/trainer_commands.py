"""The `flywheel` commands that talk to the trainer: datasets, training jobs and retrain requests, one
function per command.

Each takes the client and its parsed arguments and returns a Report, like the registry's commands. Notes
printed while a command runs (an upload, a job's progress) go to stdout, or to stderr with `--json` so
that stdout stays one JSON document. The argparse wiring is in `flywheel.cli`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from flywheel.errors import FlywheelError
from flywheel.job_progress import FINISHED_STATUSES, follow_job
from flywheel.reports import Report
from flywheel.service_client import Json
from flywheel.tables import format_cell, format_fields, format_table, format_timestamp
from flywheel.trainer_client import TrainerClient

TrainerCommand = Callable[[TrainerClient, argparse.Namespace], Report]

INTERRUPTED_EXIT_STATUS = 130  # what a shell reports for a command stopped with Ctrl-C


def parse_param(text: str) -> tuple[str, Any]:
    """`key=value` as (key, value): the value as JSON when it parses (`100` is an int, `[1, 2]` a list,
    `true` a bool), else as the string itself (`lbfgs`)."""
    key, separator, value = text.partition("=")
    if not separator or not key.strip():
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except ValueError:
        return key.strip(), value


def job_request(arguments: argparse.Namespace, dataset_uri: str) -> dict[str, Any]:
    """The body of POST /jobs from `jobs submit`'s arguments; options left out keep the trainer's defaults."""
    request: dict[str, Any] = {
        "model_name": arguments.model,
        "dataset_uri": dataset_uri,
        "target": arguments.target,
        "task": arguments.task,
        "estimator": arguments.estimator,
        "hyperparameters": dict(arguments.params or []),
    }
    optional = {
        "metric": arguments.metric,
        "seed": arguments.seed,
        "holdout_fraction": arguments.holdout,
        "experiment": arguments.experiment,
    }
    request |= {key: value for key, value in optional.items() if value is not None}
    promotion = _promotion(arguments)
    if promotion is not None:
        request["promotion"] = promotion
    return request


# ---------------------------------------------------------------- datasets


def datasets_upload(client: TrainerClient, arguments: argparse.Namespace) -> Report:
    """Upload a CSV or Parquet file for training; prints its URI and sha256."""
    dataset = _upload(client, Path(arguments.file))
    fields = [("uri", dataset["uri"]), ("sha256", dataset["sha256"]), ("size", dataset["size"])]
    return Report(dataset, format_fields(fields))


# ---------------------------------------------------------------- jobs


def jobs_submit(client: TrainerClient, arguments: argparse.Namespace) -> Report:
    """Submit a training job (a local --dataset file is uploaded first); --follow waits for its outcome."""
    dataset_uri = _dataset_uri(client, arguments.dataset, _notes(arguments))
    job = client.submit_job(job_request(arguments, dataset_uri))
    return _follow(client, job["id"], arguments) if arguments.follow else _submitted(job)


def jobs_follow(client: TrainerClient, arguments: argparse.Namespace) -> Report:
    """Show a job's progress until it ends, then its outcome; exits 1 when the job failed."""
    return _follow(client, arguments.job_id, arguments)


def jobs_list(client: TrainerClient, arguments: argparse.Namespace) -> Report:
    """The newest jobs, of one --model or all, with the score of each that succeeded."""
    page = client.list_jobs(arguments.model, arguments.max)
    headers = ["id", "model", "status", "stage", "progress", "score", "reason", "run_id", "created"]
    rows = [
        (
            job["id"],
            job["model_name"],
            job["status"],
            job["stage"],
            f"{round(job['progress'] * 100)}%",
            _score(job),
            job["reason"],
            job["run_id"],
            format_timestamp(job["created_at"]),
        )
        for job in page["jobs"]
    ]
    table = format_table(headers, rows)
    if page.get("next_page_token"):
        table += f"\n\nthe newest {len(rows)} shown; --max shows more (up to 1000)"
    return Report(page, table)


def jobs_show(client: TrainerClient, arguments: argparse.Namespace) -> Report:
    """One job: its request, progress, and its result or the reasons it failed."""
    job = client.get_job(arguments.job_id)
    return Report(job, job_report(job))


# ---------------------------------------------------------------- retrain


def retrain(client: TrainerClient, arguments: argparse.Namespace) -> Report:
    """Retrain a model with the configuration behind its production version, on --dataset when given."""
    dataset_uri = _dataset_uri(client, arguments.dataset, _notes(arguments)) if arguments.dataset else None
    job = client.retrain(arguments.model, arguments.reason, dataset_uri)
    return _follow(client, job["id"], arguments) if arguments.follow else _submitted(job)


# ---------------------------------------------------------------- reports


def job_report(job: Json) -> str:
    """A job as people read it: its fields, then its metrics when it succeeded or every problem when it
    failed."""
    request = job["request"]
    result = job["result"] or {}
    fields: list[tuple[str, object]] = [
        ("job", job["id"]),
        ("model", job["model_name"]),
        ("status", job["status"]),
    ]
    if job["status"] not in FINISHED_STATUSES:  # once finished, the stage is the status itself
        fields += [("stage", job["stage"]), ("progress", f"{round(job['progress'] * 100)}%")]
    fields += [
        ("reason", job["reason"]),
        ("estimator", request["estimator"]),
        ("hyperparameters", request["hyperparameters"]),
        ("dataset", request["dataset_uri"]),
        ("run_id", job["run_id"]),
        ("created", format_timestamp(job["created_at"])),
        ("finished", format_timestamp(job["finished_at"])),
    ]
    if job["error"]:
        fields.append(("error", job["error"]))
    if result:
        fields += [
            ("parity", _parity(result["parity"])),
            ("gate", _gate(result["gate"])),
            ("timings", _timings(result["timings"])),
            ("model_uri", result["model_uri"]),
        ]
    sections = [format_fields(fields)]
    if result:
        sections.append(format_table(["metric", "value"], sorted(result["metrics"].items())))
    if job["problems"]:
        sections.append(format_table(["problem"], [[problem] for problem in job["problems"]]))
    return "\n\n".join(sections)


def _submitted(job: Json) -> Report:
    fields = [("job", job["id"]), ("model", job["model_name"]), ("status", job["status"])]
    return Report(job, f"{format_fields(fields)}\n\nfollow it with: flywheel jobs follow {job['id']}")


def _follow(client: TrainerClient, job_id: str, arguments: argparse.Namespace) -> Report:
    notes = _notes(arguments)
    print(f"following job {job_id} (Ctrl-C stops following, not the job)", file=notes)
    try:
        job = follow_job(client, job_id, notes)
    except KeyboardInterrupt:
        print(file=notes)  # end the progress bar's line
        resume = f"stopped following; the job goes on: flywheel jobs follow {job_id}"
        return Report({"id": job_id}, resume, INTERRUPTED_EXIT_STATUS)
    print(file=notes)  # the outcome below stands apart from the progress above
    return Report(job, job_report(job), 0 if job["status"] == "succeeded" else 1)


def _parity(parity: Json) -> str:
    verdict = "passed" if parity["passed"] else "failed"
    return (
        f"{verdict}: max |difference| {format_cell(parity['max_abs_diff'])}, tolerance "
        f"{format_cell(parity['tolerance'])}, on {parity['rows']} holdout rows"
    )


def _gate(gate: Json | None) -> str:
    if gate is None:
        return "no promotion policy: registered without moving an alias"
    verdict = "promoted" if gate["promoted"] else "not promoted"
    return f"{verdict} to {gate['promote_to']}: {gate['reason']}"


def _timings(timings: dict[str, float]) -> str:
    """`fit 0.04s, onnx_conversion 0.05s, ...`: to the hundredth, which is all a person reads."""
    return ", ".join(f"{name.removesuffix('_seconds')} {seconds:.2f}s" for name, seconds in timings.items())


def _score(job: Json) -> str | None:
    metric = job["request"]["metric"]
    value = (job["result"] or {}).get("metrics", {}).get(metric)
    return None if value is None else f"{metric}={format_cell(value)}"


def _promotion(arguments: argparse.Namespace) -> dict[str, Any] | None:
    if arguments.promote_to is None:
        if arguments.min_improvement is not None or arguments.champion_alias is not None:
            raise FlywheelError("--min-improvement and --champion-alias apply only with --promote-to")
        return None
    if arguments.min_improvement is None:
        # No default margin: how much better a new version must be is a decision, not an accident.
        raise FlywheelError(
            "--promote-to needs --min-improvement: how much better (in the metric's units) the new version "
            "must score than the champion; 0 promotes one that is at least as good"
        )
    promotion = {"promote_to": arguments.promote_to, "min_improvement": arguments.min_improvement}
    if arguments.champion_alias is not None:
        promotion["champion_alias"] = arguments.champion_alias
    return promotion


def _dataset_uri(client: TrainerClient, dataset: str, notes: TextIO) -> str:
    """A dataset URI as given, or the URI of a local file once uploaded."""
    path = Path(dataset)
    if path.is_file():
        uploaded = _upload(client, path)
        print(f"uploaded {path} as {uploaded['uri']} (sha256 {uploaded['sha256']})", file=notes)
        return str(uploaded["uri"])
    if "://" in dataset:
        return dataset
    raise FlywheelError(
        f"--dataset {dataset!r} is neither a file here nor a dataset URI such as "
        "s3://flywheel/datasets/credit.csv"
    )


def _upload(client: TrainerClient, path: Path) -> Json:
    try:
        return client.upload_dataset(path)
    except OSError as error:  # the local file, not the trainer: its errors are FlywheelErrors already
        raise FlywheelError(f"cannot read {path}: {error.strerror or error}") from error


def _notes(arguments: argparse.Namespace) -> TextIO:
    return sys.stderr if arguments.json else sys.stdout
