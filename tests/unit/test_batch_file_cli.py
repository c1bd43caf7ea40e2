"""`flywheel batch` without a batch service: a local file is uploaded and a URI submitted, progress shows
rows as they are scored, the outcome shows the first rejected rows, a download is written whole to the
path given, and requests that cannot work are refused before anything is sent."""

from __future__ import annotations

import functools
import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from flywheel.batch_client import BatchClient
from flywheel.batch_commands import batch_progress_line, job_report
from flywheel.cli import main
from flywheel.job_progress import follow_job

OUTPUT = b"id,label,model_version,_error\n1,0,2,\n"


def job(status: str, stage: str, progress: float, **fields: Any) -> dict[str, Any]:
    return {
        "id": "job-1",
        "status": status,
        "stage": stage,
        "progress": progress,
        "model": "credit",
        "model_version": 2,
        "alias": "production",
        "input_uri": "s3://flywheel/data/in.csv",
        "output_uri": "s3://flywheel/data/in.predictions.csv",
        "format": "csv",
        "features": None,
        "rows_total": None,
        "rows_scored": 0,
        "rows_rejected": 0,
        "rows_logged": 0,
        "rejections": [],
        "error": None,
        "attempts": 1,
        "resumed_at_row": None,
        "output_sha256": None,
        "output_bytes": None,
        "created_at": "2024-05-01T12:00:00+00:00",
        "started_at": "2024-05-01T12:00:01+00:00",
        "finished_at": None,
        "download_url": None,
        **fields,
    }


SUCCEEDED = job(
    "succeeded",
    "succeeded",
    1.0,
    rows_total=1000,
    rows_scored=998,
    rows_rejected=2,
    rows_logged=10,
    rejections=[{"row": 3, "reason": "feature 'income' is \"x\"; the model expects FP32 numbers"}],
    output_bytes=len(OUTPUT),
    finished_at="2024-05-01T12:00:03+00:00",
    download_url="http://minio/flywheel/data/in.predictions.csv?X-Amz-Signature=abc",
)
FAILED = job("failed", "failed", 0.4, error="the file has no column 'age' for the model's inputs")


class Service:
    """An in-memory batch service: jobs move through `states`, one per poll; the output downloads."""

    def __init__(self, *states: dict[str, Any]) -> None:
        self.states = list(states)
        self.sent: list[httpx.Request] = []

    def answer(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        if request.url.host == "minio":
            return httpx.Response(200, content=OUTPUT)
        if request.method == "POST":
            return httpx.Response(201, json=job("queued", "queued", 0.0))
        if request.url.path == "/jobs":
            return httpx.Response(200, json={"jobs": [SUCCEEDED, FAILED], "next_page_token": None})
        return httpx.Response(200, json=self.states.pop(0) if len(self.states) > 1 else self.states[0])


@pytest.fixture
def service(monkeypatch: pytest.MonkeyPatch) -> Service:
    """Point the CLI at a `Service` (set its states in the test)."""
    fake = Service(SUCCEEDED)
    transport = httpx.MockTransport(fake.answer)

    def client(base_url: str | None = None) -> BatchClient:
        batch = BatchClient("http://batch")
        batch._http = httpx.Client(base_url="http://batch", transport=transport)
        return batch

    monkeypatch.setattr("flywheel.cli.BatchClient", client)
    monkeypatch.setattr(
        "flywheel.batch_client.httpx.stream",
        lambda method, url, **options: httpx.Client(transport=transport).stream(method, url),
    )
    monkeypatch.setattr(
        "flywheel.batch_commands.follow_job", functools.partial(follow_job, sleep=lambda seconds: None)
    )
    return fake


def test_a_local_file_is_uploaded_with_the_model_and_its_version(
    service: Service, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "customers.csv"
    path.write_text("a,b\n1,2\n")
    assert main(["batch", "submit", str(path), "--model", "credit", "--version", "2"]) == 0
    upload = service.sent[0]
    assert upload.url.path == "/jobs/upload"
    assert dict(upload.url.params) == {"filename": "customers.csv", "model": "credit", "version": "2"}
    assert upload.content == b"a,b\n1,2\n"
    out = capsys.readouterr().out
    assert "follow it with: flywheel batch follow job-1" in out


def test_a_uri_is_submitted_with_only_the_options_given(service: Service) -> None:
    arguments = [
        "s3://flywheel/in.csv",
        "--model",
        "m",
        "--features",
        "a",
        "b",
        "--output",
        "s3://flywheel/o.csv",
    ]
    assert main(["batch", "submit", *arguments]) == 0
    assert json.loads(service.sent[0].content) == {
        "input_uri": "s3://flywheel/in.csv",
        "model": "m",
        "features": ["a", "b"],
        "output_uri": "s3://flywheel/o.csv",
    }


def test_submit_download_follows_the_job_then_saves_its_output_whole(
    service: Service, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    service.states = [job("running", "scoring", 0.5, rows_scored=500), SUCCEEDED]
    target = tmp_path / "predictions.csv"
    assert main(["batch", "submit", "s3://flywheel/in.csv", "--model", "m", "--download", str(target)]) == 0
    assert target.read_bytes() == OUTPUT
    assert [path.name for path in tmp_path.iterdir()] == ["predictions.csv"]  # no temporary file left
    out = capsys.readouterr().out
    assert " 50%  running: scoring  500 rows (0 rejected)" in out
    assert f"saved the predictions ({len(OUTPUT)} bytes) at {target}" in out


def test_a_failed_job_exits_1_with_its_error_and_nothing_is_downloaded(
    service: Service, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    service.states = [FAILED]
    target = tmp_path / "predictions.csv"
    assert main(["batch", "submit", "s3://flywheel/in.csv", "--model", "m", "--download", str(target)]) == 1
    assert not target.exists()
    assert "the file has no column 'age'" in capsys.readouterr().out


def test_downloading_a_job_that_has_not_succeeded_says_where_it_stands(
    service: Service, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    service.states = [job("running", "scoring", 0.2)]
    assert main(["batch", "download", "job-1", str(tmp_path / "out.csv")]) == 1
    assert "job job-1 has no output to download: it is running" in capsys.readouterr().err


def test_the_outcome_shows_rows_speed_rejections_and_the_link() -> None:
    report = job_report(SUCCEEDED)
    assert "credit v2 (@production)" in report
    assert "2.0s, 500 rows/s" in report
    assert "feature 'income' is \"x\"; the model expects FP32 numbers" in report
    assert "X-Amz-Signature=abc" in report
    assert batch_progress_line(job("running", "scoring", 0.42, rows_scored=420_000, rows_rejected=12)) == (
        " 42%  running: scoring  420,012 rows (12 rejected)"
    )


def test_list_and_show_print_tables_or_the_servers_json(
    service: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["batch", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["id", "model", "status", "progress", "rows", "rejected", "input", "created"]
    assert "credit v2" in lines[1]
    assert main(["batch", "show", "job-1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows_scored"] == 998


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["batch", "submit", "no/such/file.csv", "--model", "m"], "is neither a file here nor an object URI"),
        (["batch", "list"], "the batch service at http://127.0.0.1:1 did not answer"),
    ],
)
def test_requests_that_cannot_work_are_refused_naming_the_problem(
    arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*arguments, "--batch-url", "http://127.0.0.1:1"]) == 1
    error = capsys.readouterr().err
    assert message in error


def test_an_uploaded_file_takes_no_output_uri(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "in.csv"
    path.write_text("a\n1\n")
    arguments = ["batch", "submit", str(path), "--model", "m", "--output", "s3://b/o.csv"]
    assert main([*arguments, "--batch-url", "http://127.0.0.1:1"]) == 1
    assert "--output applies to object URIs" in capsys.readouterr().err


def test_alias_and_version_together_are_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_status:
        main(["batch", "submit", "s3://b/in.csv", "--model", "m", "--alias", "a", "--version", "1"])
    assert exit_status.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_progress_into_a_log_is_a_line_per_change() -> None:
    service = Service(
        job("running", "scoring", 0.1, rows_scored=100),
        job("running", "scoring", 0.1, rows_scored=100),
        SUCCEEDED,
    )
    client = BatchClient("http://batch")
    client._http = httpx.Client(base_url="http://batch", transport=httpx.MockTransport(service.answer))
    out = io.StringIO()
    follow_job(client, "job-1", out, sleep=lambda seconds: None, line=batch_progress_line)
    assert out.getvalue().splitlines() == [
        " 10%  running: scoring  100 rows (0 rejected)",
        "100%  succeeded  1,000 rows (2 rejected)",
    ]
