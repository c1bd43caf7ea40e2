"""The trainer commands without a trainer: parsing `--param`, building the job request, following a job's
progress on a terminal and in a log, the outcome report, and the refusals made before any request."""

from __future__ import annotations

import argparse
import functools
import io
import json
from typing import Any

import httpx
import pytest

from flywheel import trainer_commands
from flywheel.cli import build_parser, main
from flywheel.job_progress import follow_job
from flywheel.trainer_client import TrainerClient

SUBMIT = ["jobs", "submit", "--model", "credit", "--target", "default", "--task", "classification"]


def job(status: str, stage: str, progress: float, **fields: Any) -> dict[str, Any]:
    return {
        "id": "job-1",
        "model_name": "credit",
        "status": status,
        "stage": stage,
        "progress": progress,
        "reason": "manual",
        "request": {
            "estimator": "logistic_regression",
            "hyperparameters": {"C": 2},
            "dataset_uri": "s3://b/d.csv",
            "metric": "roc_auc",
        },
        "run_id": "run-1",
        "error": None,
        "problems": [],
        "result": None,
        "attempts": 1,
        "created_at": "2024-05-01T12:00:00+00:00",
        "started_at": None,
        "finished_at": None,
        **fields,
    }


SUCCEEDED = job(
    "succeeded",
    "succeeded",
    1.0,
    result={
        "metrics": {"roc_auc": 0.81, "accuracy": 0.75},
        "parity": {
            "max_abs_diff": 1e-7,
            "tolerance": 1e-4,
            "passed": True,
            "label_agreement": 1.0,
            "rows": 80,
        },
        "gate": {
            "metric": "roc_auc",
            "challenger": 0.81,
            "champion": None,
            "champion_version": None,
            "margin": 0.0,
            "promoted": True,
            "promote_to": "production",
            "reason": "no production version to beat",
        },
        "timings": {"fit_seconds": 0.1},
        "model_uri": "s3://b/model.onnx",
    },
)
FAILED = job(
    "failed",
    "failed",
    0.1,
    error="data validation failed with 2 problem(s)",
    problems=["target column 'nope' is not in the dataset", "column 'colour' is missing"],
)


class Jobs:
    """A trainer whose job moves through `states`, one per poll."""

    def __init__(self, *states: dict[str, Any]) -> None:
        self.states = list(states)

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def submit_arguments(*extra: str) -> argparse.Namespace:
    return build_parser().parse_args(
        [*SUBMIT, "--estimator", "logistic_regression", "--dataset", "s3://b/d.csv", *extra]
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("n_estimators=100", ("n_estimators", 100)),
        ("C=0.5", ("C", 0.5)),
        ("fit_intercept=false", ("fit_intercept", False)),
        ("hidden=[10, 5]", ("hidden", [10, 5])),
        ("solver=lbfgs", ("solver", "lbfgs")),
        ("class_weight=", ("class_weight", "")),
        ("expression=a=b", ("expression", "a=b")),
    ],
)
def test_a_param_value_is_json_when_it_parses_and_text_otherwise(
    text: str, expected: tuple[str, Any]
) -> None:
    assert trainer_commands.parse_param(text) == expected


@pytest.mark.parametrize("text", ["n_estimators", "=100"])
def test_a_param_without_a_key_is_a_usage_error(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="expected key=value"):
        trainer_commands.parse_param(text)


def test_the_job_request_leaves_out_the_options_not_given_so_the_trainer_defaults_apply() -> None:
    request = trainer_commands.job_request(submit_arguments("--param", "C=2"), "s3://b/d.csv")
    assert request == {
        "model_name": "credit",
        "dataset_uri": "s3://b/d.csv",
        "target": "default",
        "task": "classification",
        "estimator": "logistic_regression",
        "hyperparameters": {"C": 2},
    }


def test_the_job_request_carries_every_option_given_and_the_promotion_policy() -> None:
    arguments = submit_arguments(
        *("--metric", "f1", "--seed", "7", "--holdout", "0.3", "--experiment", "credit-exp"),
        *("--promote-to", "staging", "--min-improvement", "0.01", "--champion-alias", "production"),
    )
    request = trainer_commands.job_request(arguments, "s3://b/d.csv")
    assert request["metric"] == "f1"
    assert request["seed"] == 7
    assert request["holdout_fraction"] == 0.3
    assert request["experiment"] == "credit-exp"
    assert request["promotion"] == {
        "promote_to": "staging",
        "min_improvement": 0.01,
        "champion_alias": "production",
    }


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--promote-to", "production"], "--promote-to needs --min-improvement"),
        (["--min-improvement", "0"], "apply only with --promote-to"),
    ],
)
def test_an_incomplete_promotion_policy_is_refused_before_anything_is_sent(
    options: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    arguments = [*SUBMIT, "--estimator", "logistic_regression", "--dataset", "s3://b/d.csv", *options]
    assert main([*arguments, "--trainer-url", "http://127.0.0.1:1"]) == 1
    assert message in capsys.readouterr().err


def test_a_dataset_that_is_neither_a_file_nor_a_uri_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    arguments = [*SUBMIT, "--estimator", "logistic_regression", "--dataset", "no/such/file.csv"]
    assert main([*arguments, "--trainer-url", "http://127.0.0.1:1"]) == 1
    assert "is neither a file here nor a dataset URI" in capsys.readouterr().err


def test_a_trainer_that_does_not_answer_is_named_with_how_to_point_at_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["jobs", "list", "--trainer-url", "http://127.0.0.1:1"]) == 1
    error = capsys.readouterr().err
    assert "the trainer at http://127.0.0.1:1 did not answer" in error
    assert "FLYWHEEL_TRAINER_URL (or --trainer-url)" in error


def test_following_into_a_log_prints_a_plain_line_per_change_and_returns_the_finished_job() -> None:
    trainer = Jobs(
        job("queued", "queued", 0.0),
        job("running", "training", 0.2),
        job("running", "training", 0.2),
        job("running", "evaluating", 0.75),
        SUCCEEDED,
    )
    out = io.StringIO()
    finished = follow_job(trainer, "job-1", out, sleep=lambda seconds: None)
    assert finished is SUCCEEDED
    assert out.getvalue().splitlines() == [
        "  0%  queued",
        " 20%  running: training",
        " 75%  running: evaluating",
        "100%  succeeded",
    ]


def test_following_on_a_terminal_redraws_one_bar_in_place() -> None:
    out = Terminal()
    follow_job(Jobs(job("running", "training", 0.5), SUCCEEDED), "job-1", out, sleep=lambda seconds: None)
    text = out.getvalue()
    assert text.count("\n") == 1  # the bar's line ends once, when the job does
    assert text.endswith("\n")
    assert f"\r[{'#' * 15}{'-' * 15}]  50%  running: training" in text
    assert f"\r[{'#' * 30}] 100%  succeeded" in text


def test_the_outcome_of_a_succeeded_job_shows_metrics_parity_gate_and_run() -> None:
    report = trainer_commands.job_report(SUCCEEDED)
    assert "run-1" in report
    assert ["roc_auc", "0.81"] in [line.split() for line in report.splitlines()]
    assert "passed: max |difference| 1e-07, tolerance 0.0001, on 80 holdout rows" in report
    assert "promoted to production: no production version to beat" in report
    assert "fit 0.10s" in report
    assert "C=2" in report


def test_the_outcome_of_a_failed_job_shows_the_error_and_every_problem() -> None:
    report = trainer_commands.job_report(FAILED)
    assert "data validation failed with 2 problem(s)" in report
    assert "target column 'nope' is not in the dataset" in report
    assert "column 'colour' is missing" in report


def fake_trainer(monkeypatch: pytest.MonkeyPatch, *states: dict[str, Any]) -> list[httpx.Request]:
    """Point the CLI at an in-memory trainer answering POST /jobs and GET /jobs/{id}; the requests sent."""
    sent: list[httpx.Request] = []
    polls = Jobs(*states)

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        if request.method == "POST":
            return httpx.Response(201, json=job("queued", "queued", 0.0))
        return httpx.Response(200, json=polls.get_job("job-1"))

    def client(base_url: str | None = None) -> TrainerClient:
        trainer = TrainerClient("http://trainer")
        trainer._http = httpx.Client(base_url="http://trainer", transport=httpx.MockTransport(answer))
        return trainer

    monkeypatch.setattr("flywheel.cli.TrainerClient", client)
    quick = functools.partial(follow_job, sleep=lambda seconds: None)
    monkeypatch.setattr("flywheel.trainer_commands.follow_job", quick)
    return sent


def test_submit_follow_exits_1_when_the_job_fails_printing_every_problem(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sent = fake_trainer(monkeypatch, job("running", "validating data", 0.1), FAILED)
    status = main([*SUBMIT, "--estimator", "logistic_regression", "--dataset", "s3://b/d.csv", "--follow"])
    out = capsys.readouterr().out
    assert status == 1
    assert json.loads(sent[0].content)["dataset_uri"] == "s3://b/d.csv"
    assert "10%  running: validating data" in out
    assert "target column 'nope' is not in the dataset" in out


def test_follow_with_json_keeps_stdout_one_document_and_progress_on_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_trainer(monkeypatch, job("running", "training", 0.2), SUCCEEDED)
    assert main(["jobs", "follow", "job-1", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["status"] == "succeeded"
    assert "20%  running: training" in captured.err
