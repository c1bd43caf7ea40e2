"""The Python SDK and the `flywheel` command line against a real registry process on the real servers."""

from __future__ import annotations

import hashlib
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from sklearn.linear_model import LogisticRegression

import flywheel
from flywheel.cli import main
from flywheel.client import RegistryClient
from tests.conftest import Infrastructure
from tests.integration.conftest import fresh_namespace
from tests.processes import ServiceProcess, free_port

MAX_UPLOAD_BYTES = 1024 * 1024


@pytest.fixture(scope="module")
def registry_url(
    infrastructure: Infrastructure, module_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """One registry process for the module; each test uses its own experiment and model names."""
    environment = {
        **infrastructure.isolated_environment(module_database_url, fresh_namespace()),
        "FLYWHEEL_REGISTRY_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),
    }
    registry = ServiceProcess("registry", environment, tmp_path_factory.mktemp("sdk") / "registry.log")
    registry.start()
    try:
        registry.wait_until_ready()
        yield registry.url
    finally:
        registry.stop()


@pytest.fixture
def client(registry_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[RegistryClient]:
    """A client of the module's registry, which is also where start_run and the CLI go by default."""
    monkeypatch.setenv("FLYWHEEL_REGISTRY_URL", registry_url)
    monkeypatch.setenv("FLYWHEEL_ACTOR", "alice")
    with RegistryClient() as registry_client:
        yield registry_client


@pytest.fixture
def name() -> str:
    return f"sdk-{uuid.uuid4().hex[:10]}"


def fitted_classifier() -> tuple[LogisticRegression, np.ndarray]:
    features = np.random.default_rng(11).normal(size=(64, 4))
    return LogisticRegression().fit(features, (features[:, 0] - features[:, 3] > 0).astype(int)), features


def git_commit() -> str | None:
    result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def cli(capsys: pytest.CaptureFixture[str], *arguments: str) -> tuple[int, str, str]:
    """Run `flywheel <arguments>` in-process: (exit status, stdout, stderr)."""
    status = main(list(arguments))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def cli_json(capsys: pytest.CaptureFixture[str], *arguments: str) -> dict[str, object]:
    status, out, err = cli(capsys, *arguments, "--json")
    assert status == 0, err
    parsed: dict[str, object] = json.loads(out)
    return parsed


def logged_run(experiment: str, auc: float, params: dict[str, object]) -> str:
    with flywheel.start_run(experiment=experiment) as run:
        run.log_params(params)
        run.log_metric("auc", auc)
    return run.id


# ---------------------------------------------------------------- the SDK


def test_the_readme_flow_tracks_a_run_and_registers_its_model_as_version_1_with_the_run_as_lineage(
    client: RegistryClient, name: str, tmp_path: Path
) -> None:
    estimator, features = fitted_classifier()
    report = tmp_path / "report.html"
    report.write_text("<h1>credit risk</h1>")

    with flywheel.start_run(experiment=name, run_name="baseline", tags={"team": "risk"}) as run:
        run.log_param("C", 1.0)
        run.log_params({"solver": "lbfgs", "max_iter": 100})
        run.log_metric("loss", 0.9, step=0)
        run.log_metric("loss", 0.4, step=1)
        run.log_metrics({"auc": 0.91, "f1": 0.8}, step=1)
        run.log_artifact(report, artifact_path="reports")
        logged = run.log_model(estimator, features, registered_model_name=name)

    stored = client.get_run(run.id)
    assert (stored["name"], stored["status"], stored["tags"]) == ("baseline", "finished", {"team": "risk"})
    assert stored["end_time"] is not None
    assert stored["code_version"] == git_commit()
    assert stored["params"] == {"C": "1.0", "solver": "lbfgs", "max_iter": "100"}
    assert stored["metrics"] == {"loss": 0.4, "auc": 0.91, "f1": 0.8}
    loss = client.metric_history(run.id, "loss")["points"]
    assert [(point["step"], point["value"]) for point in loss] == [(0, 0.9), (1, 0.4)]

    artifacts = {artifact["path"]: artifact for artifact in client.list_artifacts(run.id)}
    assert set(artifacts) == {"reports/report.html", "model/model.onnx"}
    assert artifacts["reports/report.html"]["content_type"] == "text/html"
    assert artifacts["model/model.onnx"]["uri"] == logged.artifact_uri
    model_bytes = httpx.get(f"{client.base_url}/runs/{run.id}/artifacts/model/model.onnx").content
    assert hashlib.sha256(model_bytes).hexdigest() == logged.sha256
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    probabilities = session.run(["probabilities"], {"X": features.astype(np.float32)})[0]
    assert np.abs(probabilities - estimator.predict_proba(features)).max() <= 1e-4

    assert logged.registered_version is not None
    assert (logged.registered_version["version"], logged.registered_version["status"]) == (1, "ready")
    assert logged.registered_version["source_run_id"] == run.id
    assert logged.registered_version["artifact_sha256"] == logged.sha256
    lineage = client.lineage(name, 1)
    assert lineage["run"]["id"] == run.id
    assert lineage["run"]["experiment_name"] == name
    assert lineage["run"]["params"]["C"] == "1.0"


def test_a_failing_block_marks_the_run_failed_and_reraises(client: RegistryClient, name: str) -> None:
    started: list[flywheel.Run] = []

    def diverging_training() -> None:
        with flywheel.start_run(experiment=name) as run:
            started.append(run)
            run.log_metric("loss", 1e9)
            raise RuntimeError("training diverged")

    with pytest.raises(RuntimeError, match="training diverged"):
        diverging_training()

    stored = client.get_run(started[0].id)
    assert stored["status"] == "failed"
    assert stored["end_time"] is not None


def test_a_model_failing_parity_raises_parity_error_and_uploads_nothing(
    client: RegistryClient, name: str
) -> None:
    estimator, features = fitted_classifier()
    with (
        flywheel.start_run(experiment=name) as run,
        pytest.raises(flywheel.ParityError, match="the tolerance is 0"),
    ):
        run.log_model(estimator, features, registered_model_name=name, parity_tolerance=0.0)

    assert client.list_artifacts(run.id) == []
    with pytest.raises(flywheel.NotFoundError):
        client.get_model(name)


def test_an_unknown_run_is_a_not_found_error_carrying_the_servers_message(client: RegistryClient) -> None:
    with pytest.raises(flywheel.NotFoundError) as raised:
        client.get_run("no-such-run")

    assert raised.value.status_code == 404
    assert "no-such-run" in raised.value.detail


def test_relogging_a_param_with_another_value_is_a_conflict_error(client: RegistryClient, name: str) -> None:
    with flywheel.start_run(experiment=name) as run:
        run.log_param("C", 1.0)
        run.log_param("C", 1.0)  # the same value again is harmless
        with pytest.raises(flywheel.ConflictError) as raised:
            run.log_param("C", 2.0)

    assert raised.value.status_code == 409
    assert "C" in raised.value.detail
    assert client.get_run(run.id)["params"] == {"C": "1.0"}


def test_a_malformed_filter_is_an_invalid_request_error_pointing_at_the_mistake(
    client: RegistryClient,
) -> None:
    with pytest.raises(flywheel.InvalidRequestError) as raised:
        client.search_runs(filter="metrics.auc >> 0.8")

    assert raised.value.status_code == 400
    assert (raised.value.position, raised.value.token) == (12, ">>")
    assert "expected a comparator" in raised.value.detail


def test_an_invalid_body_is_an_invalid_request_error_naming_the_field(
    client: RegistryClient, name: str
) -> None:
    with flywheel.start_run(experiment=name) as run, pytest.raises(flywheel.InvalidRequestError) as raised:
        run.log_param("notes", "x" * 7000)

    assert raised.value.status_code == 422
    assert "params[0].value" in str(raised.value)


def test_an_upload_over_the_registrys_limit_is_a_payload_too_large_error(
    client: RegistryClient, name: str
) -> None:
    with pytest.raises(flywheel.PayloadTooLargeError) as raised:
        client.register_version(name, b"\0" * (MAX_UPLOAD_BYTES + 1))

    assert raised.value.status_code == 413


def test_a_registry_that_does_not_answer_is_service_unavailable_naming_the_url_and_the_fix() -> None:
    dead_url = f"http://127.0.0.1:{free_port()}"

    with pytest.raises(flywheel.ServiceUnavailableError) as raised, RegistryClient(dead_url) as dead:
        dead.get_run("any")
    with pytest.raises(flywheel.ServiceUnavailableError), flywheel.start_run("any", registry_url=dead_url):
        pytest.fail("the block must not run without a registry")

    assert raised.value.status_code is None
    assert dead_url in str(raised.value)
    assert "flywheel up" in str(raised.value)


# ---------------------------------------------------------------- the command line


def test_cli_lists_and_shows_experiments(
    client: RegistryClient, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    logged_run(name, 0.8, {"C": 1})

    status, out, _ = cli(capsys, "experiments", "list")
    assert status == 0
    assert out.splitlines()[0].split() == ["name", "id", "description", "tags", "created"]
    assert name in out
    shown = cli_json(capsys, "experiments", "show", name)
    assert shown["name"] == name
    status, out, _ = cli(capsys, "experiments", "show", name)
    assert f"name         {name}" in out.splitlines()


def test_cli_runs_list_filters_and_orders_as_a_table_or_json(
    client: RegistryClient, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    weak = logged_run(name, 0.7, {"C": 0.1})
    strong = logged_run(name, 0.9, {"C": 10})

    status, out, _ = cli(capsys, "runs", "list", "--experiment", name, "--filter", "metrics.auc > 0.8")
    assert status == 0
    header, *rows = out.splitlines()
    assert header.split() == ["id", "name", "status", "started", "metrics.auc"]
    assert [row.split()[0] for row in rows] == [strong]
    assert rows[0].split()[-1] == "0.9"

    page = cli_json(
        capsys, "runs", "list", "--experiment", name, "--order-by", "metrics.auc DESC", "--max", "10"
    )
    assert [run["id"] for run in page["runs"]] == [strong, weak]  # type: ignore[attr-defined]


def test_cli_runs_show_and_compare_mark_the_params_that_differ(
    client: RegistryClient, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    first = logged_run(name, 0.7, {"C": 0.1, "solver": "lbfgs"})
    second = logged_run(name, 0.9, {"C": 10, "solver": "lbfgs"})

    status, out, _ = cli(capsys, "runs", "show", first)
    assert status == 0
    assert "finished" in out
    assert ["C", "0.1"] in [line.split() for line in out.splitlines()]

    status, out, _ = cli(capsys, "runs", "compare", first, second)
    assert status == 0
    table, footnote = out.split("\n\n")
    rows = {" ".join(line.split()[:-2]): line.split()[-2:] for line in table.splitlines()}
    assert rows["params.C *"] == ["0.1", "10"]
    assert rows["params.solver"] == ["lbfgs", "lbfgs"]
    assert rows["metrics.auc"] == ["0.7", "0.9"]
    assert footnote.strip() == "* differs between the runs"
    comparison = cli_json(capsys, "runs", "compare", first, second)
    assert comparison["differing_params"] == ["C"]


def test_cli_model_versions_aliases_lineage_and_audit(
    client: RegistryClient, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    estimator, features = fitted_classifier()
    run_ids: list[str] = []
    for _ in range(2):
        with flywheel.start_run(experiment=name, run_name=f"train-{len(run_ids)}") as run:
            run.log_param("C", 1.0)
            run.log_model(estimator, features, registered_model_name=name)
        run_ids.append(run.id)

    status, out, _ = cli(capsys, "models", "versions", name)
    assert status == 0
    header, *rows = out.splitlines()
    assert header.split()[:4] == ["version", "status", "aliases", "source_run"]
    assert [row.split()[:2] for row in rows] == [["2", "ready"], ["1", "ready"]]
    versions = cli_json(capsys, "models", "versions", name)["versions"]
    assert [v["source_run_id"] for v in versions] == run_ids[::-1]  # type: ignore[attr-defined]

    status, out, _ = cli(capsys, "models", "set-alias", name, "production", "1")
    assert status == 0
    assert out.splitlines()[1].split() == [name, "production", "1", "-"]
    move = cli_json(capsys, "models", "set-alias", name, "production", "2")
    assert (move["version"], move["previous_version"]) == (2, 1)
    shown = cli_json(capsys, "models", "show", name, "--alias", "production")
    assert shown["version"] == 2
    status, out, _ = cli(capsys, "models", "list")
    assert [name, "2", "production=2"] in [line.split()[:3] for line in out.splitlines()]

    status, out, _ = cli(capsys, "models", "lineage", name, "1")
    assert status == 0
    fields = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    assert fields["source_run_id"] == [run_ids[0]]
    assert fields["run"] == ["train-0"]
    assert fields["experiment"] == [name]
    assert fields["C"] == ["1.0"]
    lineage = cli_json(capsys, "models", "lineage", name, "1")
    assert lineage["run"]["id"] == run_ids[0]  # type: ignore[index]

    status, out, _ = cli(capsys, "models", "audit", name)
    assert status == 0
    actions = [line.split()[3:5] for line in out.splitlines()[1:]]  # date and time make two words
    assert [action for action, *_ in actions] == ["create_model", "create_version", "create_version"] + [
        "set_alias"
    ] * 2
    assert "version: 1 -> 2" in out.splitlines()[-1]
    audit = cli_json(capsys, "models", "audit", name)
    assert {entry["actor"] for entry in audit["entries"]} == {"alice"}  # type: ignore[attr-defined]

    cli(capsys, "models", "set-alias", name, "canary", "1")
    status, out, _ = cli(capsys, "models", "traffic", name, "--split", "production=90", "canary=10")
    assert (status, out.strip()) == (0, f"{name}: production 90%, canary 10%")
    assert cli_json(capsys, "models", "traffic", name)["traffic_policy"] == {
        "split": {"production": 90, "canary": 10},
        "shadow": [],
    }
    status, _, err = cli(capsys, "models", "traffic", name, "--split", "production=90", "canary=5")
    assert status != 0
    assert "sum to 95" in err
    status, _, err = cli(capsys, "models", "traffic", name, "--shadow", "canary")
    assert status != 0
    assert "--shadow goes with --split" in err
    status, out, _ = cli(capsys, "models", "traffic", name, "--clear")
    assert (status, out.strip()) == (0, f"{name}: every request to the default alias")


def test_cli_errors_go_to_stderr_with_exit_status_1_and_usage_errors_exit_2(
    client: RegistryClient, registry_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = cli(capsys, "runs", "show", "no-such-run")
    assert (status, out) == (1, "")
    assert err.startswith("flywheel: ")
    assert "no-such-run" in err

    status, _, err = cli(capsys, "runs", "list", "--filter", "metrics.auc >> 0.8")
    assert status == 1
    assert "position 12" in err

    dead_url = f"http://127.0.0.1:{free_port()}"
    status, _, err = cli(capsys, "models", "list", "--registry-url", dead_url)
    assert status == 1
    assert dead_url in err
    assert "flywheel up" in err
    status, _, _ = cli(capsys, "models", "list", "--registry-url", registry_url)
    assert status == 0

    with pytest.raises(SystemExit) as usage:
        main(["models", "lineage", "credit-risk", "not-a-number"])
    assert usage.value.code == 2
