"""The `flywheel` datasets, jobs and retrain commands against a real registry and a real trainer, each its
own process on the real servers: a local CSV is uploaded and trained to its outcome, jobs are listed and
shown, a bad job exits 1 with its problem, and a model promoted by a job can be retrained."""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flywheel.cli import main
from tests.conftest import Infrastructure
from tests.integration.conftest import fresh_namespace
from tests.processes import ServiceProcess
from tests.trainer_data import FEATURES, credit_risk_frame

JOB_SECONDS = 120.0


@dataclass(frozen=True)
class Services:
    registry_url: str
    trainer_url: str


@pytest.fixture(scope="module")
def services(
    infrastructure: Infrastructure, module_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Services]:
    """A registry process and a trainer process that trains for it, in their own Kafka namespace."""
    logs = tmp_path_factory.mktemp("cli-jobs")
    environment = {
        **infrastructure.isolated_environment(module_database_url, fresh_namespace()),
        "FLYWHEEL_LOG_LEVEL": "WARNING",
    }
    registry = ServiceProcess("registry", environment, logs / "registry.log").start()
    trainer: ServiceProcess | None = None
    try:
        registry.wait_until_ready()
        trainer_environment = environment | {"FLYWHEEL_TRAINER_REGISTRY_URL": registry.url}
        trainer = ServiceProcess("trainer", trainer_environment, logs / "trainer.log").start()
        trainer.wait_until_ready()
        yield Services(registry.url, trainer.url)
    finally:
        if trainer is not None:
            trainer.stop()
        registry.stop()


@pytest.fixture
def model() -> str:
    return f"cli-{uuid.uuid4().hex[:10]}"


def write_credit_csv(path: Path, seed: int) -> Path:
    """Loan applicants with the classification target `default` (and not the regression target)."""
    credit_risk_frame(400, seed)[[*FEATURES, "default"]].to_csv(path, index=False)
    return path


@pytest.fixture
def credit_csv(tmp_path: Path) -> Path:
    return write_credit_csv(tmp_path / "credit.csv", seed=0)


def cli(capsys: pytest.CaptureFixture[str], *arguments: str) -> tuple[int, str, str]:
    """Run `flywheel <arguments>` in-process: (exit status, stdout, stderr)."""
    status = main(list(arguments))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def trainer_json(capsys: pytest.CaptureFixture[str], services: Services, *arguments: str) -> Any:
    status, out, err = cli(capsys, *arguments, "--trainer-url", services.trainer_url, "--json")
    assert status == 0, err
    return json.loads(out)


def submit(services: Services, model: str, dataset: Path | str, *options: str) -> list[str]:
    """`flywheel jobs submit` of a logistic regression on the credit data, followed to its outcome."""
    return [
        *("jobs", "submit", "--model", model, "--dataset", str(dataset), "--target", "default"),
        *("--task", "classification", "--estimator", "logistic_regression", "--param", "max_iter=500"),
        *("--follow", "--trainer-url", services.trainer_url, *options),
    ]


def wait_for_production(capsys: pytest.CaptureFixture[str], services: Services, model: str) -> dict[str, Any]:
    """The model's production version, once the registry has registered and promoted it."""
    deadline = time.monotonic() + JOB_SECONDS
    while True:
        status, out, _ = cli(
            capsys,
            "models",
            "show",
            model,
            "--alias",
            "production",
            "--registry-url",
            services.registry_url,
            "--json",
        )
        if status == 0:
            version: dict[str, Any] = json.loads(out)
            return version
        if time.monotonic() > deadline:
            raise AssertionError(f"{model} had no production version within {JOB_SECONDS}s")
        time.sleep(0.2)


def test_datasets_upload_prints_the_uri_and_sha256_of_the_file(
    services: Services, credit_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sha256 = hashlib.sha256(credit_csv.read_bytes()).hexdigest()
    status, out, err = cli(
        capsys, "datasets", "upload", str(credit_csv), "--trainer-url", services.trainer_url
    )
    assert status == 0, err
    assert "s3://flywheel-tests/workspaces/default/datasets/" in out
    assert sha256 in out

    uploaded = trainer_json(capsys, services, "datasets", "upload", str(credit_csv))
    assert uploaded["sha256"] == sha256
    assert uploaded["uri"].endswith("/credit.csv")
    assert uploaded["size"] == credit_csv.stat().st_size


def test_submit_uploads_a_local_csv_and_follow_ends_succeeded_with_the_metrics(
    services: Services, model: str, credit_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = cli(capsys, *submit(services, model, credit_csv, "--seed", "3"))
    assert status == 0, out + err
    assert f"uploaded {credit_csv} as s3://flywheel-tests/workspaces/default/datasets/" in out
    assert "100%  succeeded" in out  # stdout is not a terminal here: plain progress lines
    assert "roc_auc" in out
    assert "accuracy" in out
    assert re.search(r"^parity +passed: ", out, re.MULTILINE)
    assert "no promotion policy" in out

    listed = trainer_json(capsys, services, "jobs", "list", "--model", model)["jobs"]
    assert [job["status"] for job in listed] == ["succeeded"]
    job = trainer_json(capsys, services, "jobs", "show", listed[0]["id"])
    assert job["request"]["hyperparameters"] == {"max_iter": 500}  # `--param max_iter=500` is a number
    assert job["request"]["seed"] == 3
    assert job["request"]["feature_columns"] is None
    assert job["run_id"] in out
    assert set(job["result"]["metrics"]) == {"accuracy", "roc_auc", "f1", "log_loss"}

    status, table, err = cli(capsys, "jobs", "list", "--model", model, "--trainer-url", services.trainer_url)
    assert status == 0, err
    assert job["id"] in table
    assert "roc_auc=" in table


def test_a_job_missing_its_target_column_exits_1_printing_the_problem(
    services: Services, model: str, credit_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arguments = submit(services, model, credit_csv)
    arguments[arguments.index("default")] = "no_such_column"
    status, out, err = cli(capsys, *arguments)
    assert status == 1, out + err
    assert "data validation failed" in out
    assert "target column 'no_such_column' is not in the dataset" in out


def test_retrain_of_a_model_promoted_by_a_job_follows_a_new_job_on_newer_data(
    services: Services, model: str, credit_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    promote = ("--promote-to", "production", "--min-improvement", "0")
    status, out, err = cli(capsys, *submit(services, model, credit_csv, *promote))
    assert status == 0, out + err
    assert "promoted to production" in out
    production = wait_for_production(capsys, services, model)

    newer = write_credit_csv(tmp_path / "newer.csv", seed=1)
    status, out, err = cli(
        capsys,
        *("retrain", model, "--reason", "cli-test", "--dataset", str(newer), "--follow", "--json"),
        *("--trainer-url", services.trainer_url),
    )
    assert status == 0, out + err
    job = json.loads(out)  # --json: stdout is the job alone, progress went to stderr
    assert "uploaded" in err
    assert job["status"] == "succeeded", job["error"]
    assert job["reason"] == "cli-test"
    assert job["request"]["dataset_uri"].endswith("/newer.csv")
    assert job["request"]["estimator"] == "logistic_regression"
    assert job["result"]["gate"]["champion_version"] == production["version"]


def test_trainer_errors_are_reported_with_the_servers_message(
    services: Services, model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    trainer = ("--trainer-url", services.trainer_url)
    status, _, err = cli(capsys, "jobs", "show", "no-such-job", *trainer)
    assert (status, err.strip()) == (1, "flywheel: no training job 'no-such-job'")

    status, _, err = cli(capsys, "retrain", model, *trainer)
    assert status == 1
    assert f"model {model!r} has no production version" in err

    arguments = submit(services, model, "s3://flywheel-tests/datasets/x.csv")
    arguments[arguments.index("logistic_regression")] = "svm"
    status, _, err = cli(capsys, *arguments)
    assert status == 1
    assert "unknown estimator 'svm'" in err
