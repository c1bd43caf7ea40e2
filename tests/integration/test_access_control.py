"""Access control on the real servers: the five services as processes with tokens required (issue 9).

Every role against every route family, allowed and refused; workspaces that do not see each other; a
revoked token refused within the cache's time; tokens stored only as hashes; the audit trail's actor.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from shared.auth import Role, new_token
from tests.conftest import Infrastructure
from tests.integration.conftest import delete_topics, fresh_namespace
from tests.models import tiny_classifier_onnx
from tests.processes import Platform, start_platform
from tests.trainer_data import FAST_HYPERPARAMETERS, FEATURES, credit_risk_frame

CACHE_SECONDS = 1.0
ADMIN_TOKEN = new_token()
SERVICE_TOKEN = new_token()
MODEL = "ac-credit"  # workspace risk's model
OTHER_MODEL = "ac-fraud"  # workspace fraud's
ROWS = [[0.5, -1.0, 2.0, 0.1]]


def infer_body() -> dict[str, Any]:
    return {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": ROWS}]}


@dataclass
class AccessControlled:
    platform: Platform
    database_url: str
    tokens: dict[str, str]  # role -> token, each in workspace risk
    fraud_token: str  # an ml-engineer of workspace fraud
    risk_run_id: str

    def url(self, service: str) -> str:
        processes = {process.service: process for process in self.platform.processes}
        return processes[service].url

    def call(self, token: str | None, service: str, method: str, path: str, **options: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        headers.update(options.pop("headers", {}))
        return httpx.request(method, self.url(service) + path, headers=headers, timeout=30, **options)


def ok(response: httpx.Response) -> Any:
    assert response.is_success, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json() if response.content else None


@pytest.fixture(scope="module")
async def controlled(
    infrastructure: Infrastructure, module_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[AccessControlled]:
    namespace = fresh_namespace()
    environment = {
        **infrastructure.isolated_environment(module_database_url, namespace),
        "FLYWHEEL_AUTH_ENABLED": "true",
        "FLYWHEEL_AUTH_CACHE_SECONDS": str(CACHE_SECONDS),
        "FLYWHEEL_ADMIN_TOKEN": ADMIN_TOKEN,
        "FLYWHEEL_SERVICE_TOKEN": SERVICE_TOKEN,
    }
    log_dir: Path = tmp_path_factory.mktemp("access-control")
    platform = await asyncio.to_thread(start_platform, environment, log_dir)
    try:
        yield await asyncio.to_thread(set_up, platform, module_database_url)
    finally:
        platform.stop()
        await delete_topics(infrastructure.kafka_bootstrap, namespace)


def set_up(platform: Platform, database_url: str) -> AccessControlled:
    """A token per role in workspace risk (an ML engineer in fraud too); each workspace's model, served
    from production; a run in risk."""
    controlled = AccessControlled(platform, database_url, {}, "", "")
    for role in Role:
        if role is Role.SERVICE:
            continue
        created = controlled.call(
            ADMIN_TOKEN,
            "registry",
            "POST",
            "/auth/tokens",
            json={"user": f"{role}-user", "workspace": "risk", "role": role},
        )
        controlled.tokens[role] = ok(created)["token"]
    fraud = {"user": "frank", "workspace": "fraud", "role": "ml-engineer"}
    controlled.fraud_token = ok(controlled.call(ADMIN_TOKEN, "registry", "POST", "/auth/tokens", json=fraud))[
        "token"
    ]
    for token, model in ((controlled.tokens[Role.ML_ENGINEER], MODEL), (controlled.fraud_token, OTHER_MODEL)):
        upload = {"files": {"model": tiny_classifier_onnx()}}
        ok(controlled.call(token, "registry", "POST", f"/models/{model}/versions", **upload))
        ok(
            controlled.call(
                token, "registry", "PUT", f"/models/{model}/aliases/production", json={"version": 1}
            )
        )
    run = controlled.call(
        controlled.tokens[Role.DATA_SCIENTIST],
        "registry",
        "POST",
        "/runs",
        json={"experiment_name": "ac-exp"},
    )
    controlled.risk_run_id = ok(run)["id"]
    return controlled


# One route per family and service: (family, service, method, path, request options). A change that
# would alter what other cases rely on is sent with a body the route refuses (422) once allowed: the
# refusal of the role comes first, so a 422 proves the role passed.
ROUTES: list[tuple[str, str, str, str, dict[str, Any]]] = [
    ("read", "registry", "GET", f"/models/{MODEL}", {}),
    ("read", "registry", "POST", "/runs/search", {"json": {"filter": ""}}),
    ("read", "trainer", "GET", "/jobs", {}),
    ("read", "batch", "GET", "/jobs", {}),
    ("read", "monitor", "GET", "/alerts", {}),
    ("read", "monitor", "GET", "/dashboard", {}),
    ("track", "registry", "POST", "/runs", {"json": {"experiment_name": "ac-exp"}}),
    ("track", "registry", "POST", "/experiments", {"json": {}}),
    ("register", "registry", "PUT", f"/models/{MODEL}/tags/team", {"json": {"value": "risk"}}),
    ("register", "registry", "PUT", f"/models/{MODEL}/aliases/staging", {"json": {"version": 1}}),
    ("promote", "registry", "PUT", f"/models/{MODEL}/aliases/production", {"json": {"version": 1}}),
    (
        "promote",
        "registry",
        "PUT",
        f"/models/{MODEL}/traffic-policy",
        {"json": {"split": {"production": 100}}},
    ),
    ("train", "trainer", "POST", "/jobs", {"json": {}}),
    ("retrain", "trainer", "POST", "/retrain", {"json": {}}),
    ("retrain", "trainer", "PUT", f"/schedules/{MODEL}", {"json": {}}),
    ("batch", "batch", "POST", "/jobs", {"json": {}}),
    ("monitor", "monitor", "PUT", f"/models/{MODEL}/policy", {"json": {"window_rows": "many"}}),
    ("monitor", "monitor", "POST", "/subscriptions", {"json": {}}),
    ("infer", "serving", "POST", f"/v2/models/{MODEL}/infer", {"json": infer_body()}),
    ("infer", "serving", "POST", f"/v1/models/{MODEL}:predict", {"json": {"instances": ROWS}}),
    ("infer", "serving", "GET", f"/v2/models/{MODEL}", {}),
    ("admin", "registry", "GET", "/auth/tokens", {}),
    ("admin", "registry", "POST", "/auth/tokens", {"json": {}}),
]
# Who may use each family, as the design says (written out here, not read from shared.auth's table).
ALLOWED: dict[str, set[Role]] = {
    "read": {Role.ADMIN, Role.ML_ENGINEER, Role.DATA_SCIENTIST, Role.VIEWER},
    "track": {Role.ADMIN, Role.ML_ENGINEER, Role.DATA_SCIENTIST},
    "register": {Role.ADMIN, Role.ML_ENGINEER, Role.DATA_SCIENTIST},
    "promote": {Role.ADMIN, Role.ML_ENGINEER},
    "train": {Role.ADMIN, Role.ML_ENGINEER, Role.DATA_SCIENTIST},
    "retrain": {Role.ADMIN, Role.ML_ENGINEER},
    "batch": {Role.ADMIN, Role.ML_ENGINEER},
    "monitor": {Role.ADMIN, Role.ML_ENGINEER},
    "infer": {Role.ADMIN, Role.ML_ENGINEER, Role.PREDICTOR},
    "admin": {Role.ADMIN},
}
USER_ROLES = [role for role in Role if role is not Role.SERVICE]


def route_id(route: tuple[str, str, str, str, dict[str, Any]]) -> str:
    return f"{route[0]}:{route[1]}:{route[2]} {route[3]}"


@pytest.mark.parametrize("role", USER_ROLES, ids=str)
@pytest.mark.parametrize("route", ROUTES, ids=route_id)
def test_each_role_is_allowed_exactly_the_route_families_of_its_permissions(
    controlled: AccessControlled, route: tuple[str, str, str, str, dict[str, Any]], role: Role
) -> None:
    family, service, method, path, options = route
    response = controlled.call(controlled.tokens[role], service, method, path, **options)
    if role in ALLOWED[family]:
        assert response.status_code not in (401, 403), response.text
        assert response.status_code < 500, response.text
    else:
        assert response.status_code == 403, response.text
        assert "lacks permission" in response.text


@pytest.mark.parametrize("route", ROUTES, ids=route_id)
def test_without_a_valid_token_every_route_is_401_with_the_bearer_challenge(
    controlled: AccessControlled, route: tuple[str, str, str, str, dict[str, Any]]
) -> None:
    _, service, method, path, options = route
    for token in (None, "fw_not-a-token"):
        response = controlled.call(token, service, method, path, **options)
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("service", ["registry", "trainer", "serving", "batch", "monitor"])
def test_health_and_metrics_stay_open(controlled: AccessControlled, service: str) -> None:
    for path in ("/health/live", "/health/ready", "/metrics"):
        assert controlled.call(None, service, "GET", path).status_code == 200


def test_the_production_alias_needs_promotion_other_aliases_do_not(controlled: AccessControlled) -> None:
    scientist = controlled.tokens[Role.DATA_SCIENTIST]
    moved = controlled.call(
        scientist, "registry", "PUT", f"/models/{MODEL}/aliases/canary", json={"version": 1}
    )
    assert moved.status_code == 200, moved.text
    assert (
        controlled.call(scientist, "registry", "DELETE", f"/models/{MODEL}/aliases/canary").status_code == 204
    )
    for method, options in (("PUT", {"json": {"version": 1}}), ("DELETE", {})):
        refused = controlled.call(
            scientist, "registry", method, f"/models/{MODEL}/aliases/production", **options
        )
        assert refused.status_code == 403
        assert "promote_production" in refused.text


def test_another_workspace_can_neither_end_nor_log_to_a_run(controlled: AccessControlled) -> None:
    """The workspace is checked in the statement that changes the run: 404, and the run is unchanged."""
    fraud, risk = controlled.fraud_token, controlled.tokens[Role.ML_ENGINEER]
    run = controlled.risk_run_id
    ended = controlled.call(fraud, "registry", "PATCH", f"/runs/{run}", json={"status": "killed"})
    assert ended.status_code == 404, ended.text
    assert ended.json() == {"detail": f"no run with id {run!r}"}
    logged = controlled.call(
        fraud, "registry", "POST", f"/runs/{run}/log-batch", json={"metrics": [{"key": "x", "value": 1}]}
    )
    assert logged.status_code == 404, logged.text
    assert logged.json() == {"detail": f"no run with id {run!r}"}
    seen = ok(controlled.call(risk, "registry", "GET", f"/runs/{run}"))
    assert seen["status"] == "running"
    assert "x" not in seen["metrics"]


def test_another_workspace_reads_as_missing_everywhere(controlled: AccessControlled) -> None:
    fraud, risk = controlled.fraud_token, controlled.tokens[Role.ML_ENGINEER]
    run = controlled.risk_run_id
    missing: list[tuple[str, str, str, dict[str, Any]]] = [
        ("registry", "GET", f"/models/{MODEL}", {}),
        ("registry", "GET", f"/models/{MODEL}/versions", {}),
        ("registry", "GET", f"/models/{MODEL}/versions/1", {}),
        ("registry", "GET", f"/models/{MODEL}/aliases/production", {}),
        ("registry", "GET", f"/models/{MODEL}/audit", {}),
        ("registry", "PUT", f"/models/{MODEL}/tags/owner", {"json": {"value": "frank"}}),
        ("registry", "PUT", f"/models/{MODEL}/aliases/production", {"json": {"version": 1}}),
        ("registry", "DELETE", f"/models/{MODEL}", {}),
        ("registry", "GET", f"/runs/{run}", {}),
        ("registry", "POST", f"/runs/{run}/log-batch", {"json": {"params": [{"key": "a", "value": "b"}]}}),
        ("registry", "GET", "/experiments/by-name/ac-exp", {}),
        ("serving", "POST", f"/v2/models/{MODEL}/infer", {"json": infer_body()}),
        ("serving", "GET", f"/v2/models/{MODEL}", {}),
    ]
    for service, method, path, options in missing:
        response = controlled.call(fraud, service, method, path, **options)
        assert response.status_code == 404, f"{method} {path}: {response.status_code} {response.text}"
    # Listings and searches hold only the caller's workspace.
    assert [m["name"] for m in ok(controlled.call(fraud, "registry", "GET", "/models"))["models"]] == [
        OTHER_MODEL
    ]
    assert [m["name"] for m in ok(controlled.call(risk, "registry", "GET", "/models"))["models"]] == [MODEL]
    assert ok(controlled.call(fraud, "registry", "POST", "/runs/search", json={}))["runs"] == []
    assert run in [
        r["id"] for r in ok(controlled.call(risk, "registry", "POST", "/runs/search", json={}))["runs"]
    ]
    assert ok(controlled.call(fraud, "registry", "GET", "/experiments"))["experiments"] == []
    compared = controlled.call(fraud, "registry", "GET", "/runs/compare", params={"run_id": run})
    assert compared.status_code == 404
    # Names are unique across workspaces: taking one another workspace holds is a conflict.
    taken = controlled.call(fraud, "registry", "POST", "/models", json={"name": MODEL})
    assert taken.status_code == 409
    # Each workspace's own model is served to it, and says whose it is.
    assert ok(controlled.call(risk, "registry", "GET", f"/models/{MODEL}/versions/1"))["workspace"] == "risk"
    assert controlled.call(
        fraud, "serving", "POST", f"/v2/models/{OTHER_MODEL}/infer", json=infer_body()
    ).is_success
    assert (
        controlled.call(
            risk, "serving", "POST", f"/v2/models/{OTHER_MODEL}/infer", json=infer_body()
        ).status_code
        == 404
    )


def test_a_revoked_token_is_refused_everywhere_within_the_cache_time(controlled: AccessControlled) -> None:
    body = {"user": "temp", "workspace": "risk", "role": "ml-engineer"}
    created = ok(controlled.call(ADMIN_TOKEN, "registry", "POST", "/auth/tokens", json=body))
    token = created["token"]
    infer = ("serving", "POST", f"/v2/models/{MODEL}/infer")
    assert controlled.call(token, *infer, json=infer_body()).status_code == 200  # cached by serving now
    assert controlled.call(token, "registry", "GET", f"/models/{MODEL}").status_code == 200
    revoked = ok(controlled.call(ADMIN_TOKEN, "registry", "DELETE", f"/auth/tokens/{created['id']}"))
    assert revoked["revoked_at"] is not None
    assert controlled.call(token, "registry", "GET", "/auth/whoami").status_code == 401  # at once
    time.sleep(CACHE_SECONDS + 0.2)
    assert controlled.call(token, *infer, json=infer_body()).status_code == 401
    assert controlled.call(token, "registry", "GET", f"/models/{MODEL}").status_code == 401
    assert controlled.call(token, "trainer", "GET", "/jobs").status_code == 401


async def test_tokens_are_stored_only_as_their_sha256(controlled: AccessControlled) -> None:
    connection = await asyncpg.connect(controlled.database_url)
    try:
        rows = await connection.fetch("SELECT * FROM registry.tokens")
    finally:
        await connection.close()
    stored = {row["hash"] for row in rows}
    issued = [ADMIN_TOKEN, SERVICE_TOKEN, *controlled.tokens.values(), controlled.fraud_token]
    assert {hashlib.sha256(token.encode()).hexdigest() for token in issued} <= stored
    every_value = " ".join(str(value) for row in rows for value in row.values())
    assert not any(token in every_value for token in issued)
    listed = ok(controlled.call(ADMIN_TOKEN, "registry", "GET", "/auth/tokens"))
    assert all("token" not in entry and "hash" not in entry for entry in listed)
    assert not any(token in str(listed) for token in issued)


def test_the_audit_trail_names_the_tokens_user_whatever_the_caller_claims(
    controlled: AccessControlled,
) -> None:
    engineer = controlled.tokens[Role.ML_ENGINEER]
    ok(
        controlled.call(
            engineer,
            "registry",
            "PUT",
            f"/models/{MODEL}/tags/reviewed",
            json={"value": "yes"},
            headers={"X-Flywheel-Actor": "mallory"},
        )
    )
    entries = ok(controlled.call(engineer, "registry", "GET", f"/models/{MODEL}/audit"))["entries"]
    assert entries[0]["actor"] == "ml-engineer-user"  # created by the first upload
    assert entries[-1]["action"] == "set_tag"
    assert entries[-1]["actor"] == "ml-engineer-user"


def test_whoami_answers_the_tokens_principal(controlled: AccessControlled) -> None:
    me = ok(controlled.call(controlled.tokens[Role.VIEWER], "registry", "GET", "/auth/whoami"))
    assert (me["user"], me["workspace"], me["role"]) == ("viewer-user", "risk", "viewer")


def test_a_training_job_and_what_it_makes_belong_to_its_submitters_workspace(
    controlled: AccessControlled,
) -> None:
    scientist, fraud = controlled.tokens[Role.DATA_SCIENTIST], controlled.fraud_token
    csv = credit_risk_frame(400, seed=5).to_csv(index=False).encode()
    dataset = ok(
        controlled.call(scientist, "trainer", "POST", "/datasets", params={"filename": "c.csv"}, content=csv)
    )
    request = {
        "dataset_uri": dataset["uri"],
        "target": "default",
        "task": "classification",
        "estimator": "logistic_regression",
        "hyperparameters": FAST_HYPERPARAMETERS["logistic_regression"],
        "model_name": "ac-trained",
        "feature_columns": FEATURES,
    }
    job = ok(controlled.call(scientist, "trainer", "POST", "/jobs", json=request))
    assert job["workspace"] == "risk"
    assert controlled.call(fraud, "trainer", "GET", f"/jobs/{job['id']}").status_code == 404
    assert ok(controlled.call(fraud, "trainer", "GET", "/jobs"))["jobs"] == []
    deadline = time.monotonic() + 120
    while (found := ok(controlled.call(scientist, "trainer", "GET", f"/jobs/{job['id']}")))[
        "status"
    ] != "succeeded":
        assert found["status"] != "failed", found
        assert time.monotonic() < deadline, f"the job did not succeed in time: {found}"
        time.sleep(0.5)
    # Its run, experiment and model version were made in the submitter's workspace.
    assert (
        ok(controlled.call(scientist, "registry", "GET", f"/runs/{found['run_id']}"))["status"] == "finished"
    )
    assert controlled.call(fraud, "registry", "GET", f"/runs/{found['run_id']}").status_code == 404
    assert (
        ok(controlled.call(scientist, "registry", "GET", "/experiments/by-name/ac-trained"))["workspace"]
        == "risk"
    )
    deadline = time.monotonic() + 60
    while (
        version := controlled.call(scientist, "registry", "GET", "/models/ac-trained/versions/1")
    ).status_code == 404:
        assert time.monotonic() < deadline, "the trained model was not registered in workspace risk"
        time.sleep(0.5)
    assert ok(version)["workspace"] == "risk"
    assert controlled.call(fraud, "registry", "GET", "/models/ac-trained").status_code == 404


def test_a_batch_job_belongs_to_its_models_workspace(controlled: AccessControlled) -> None:
    engineer, fraud = controlled.tokens[Role.ML_ENGINEER], controlled.fraud_token
    csv = b"a,b,c,d\n0.5,-1.0,2.0,0.1\n1.0,0.0,-0.5,0.2\n"
    upload = {
        "params": {"filename": "rows.csv", "model": MODEL, "features": ["a", "b", "c", "d"]},
        "content": csv,
        "headers": {"content-type": "application/octet-stream"},
    }
    refused = controlled.call(fraud, "batch", "POST", "/jobs/upload", **upload)
    assert refused.status_code == 404, refused.text  # another workspace's model reads as missing
    job = ok(controlled.call(engineer, "batch", "POST", "/jobs/upload", **upload))
    assert job["workspace"] == "risk"
    assert controlled.call(fraud, "batch", "GET", f"/jobs/{job['id']}").status_code == 404
    assert ok(controlled.call(fraud, "batch", "GET", "/jobs"))["jobs"] == []
    assert [j["id"] for j in ok(controlled.call(engineer, "batch", "GET", "/jobs"))["jobs"]] == [job["id"]]


def test_the_monitor_shows_a_workspace_only_its_models(controlled: AccessControlled) -> None:
    engineer, fraud = controlled.tokens[Role.ML_ENGINEER], controlled.fraud_token
    for path in (f"/models/{MODEL}/status", f"/models/{MODEL}/policy", f"/dashboard/{MODEL}"):
        assert controlled.call(fraud, "monitor", "GET", path).status_code == 404, path
        assert controlled.call(engineer, "monitor", "GET", path).status_code == 200, path
    refused = controlled.call(fraud, "monitor", "PUT", f"/models/{MODEL}/policy", json={})
    assert refused.status_code == 404
    assert controlled.call(fraud, "monitor", "GET", "/alerts", params={"model": MODEL}).json()["alerts"] == []


def test_a_browser_signs_in_to_the_dashboard_with_a_token_kept_in_a_strict_cookie(
    controlled: AccessControlled,
) -> None:
    monitor = controlled.url("monitor")
    page = {"accept": "text/html,application/xhtml+xml"}
    with httpx.Client(base_url=monitor, timeout=30) as browser:
        # Without a token, a browser asking for a dashboard page is sent to the sign-in form.
        sent = browser.get(f"/dashboard/{MODEL}", headers=page)
        assert sent.status_code == 303
        assert sent.headers["location"] == f"/login?next=/dashboard/{MODEL}"
        form = browser.get(sent.headers["location"])
        assert form.status_code == 200
        assert 'name="token"' in form.text
        assert f'value="/dashboard/{MODEL}"' in form.text
        assert "form-action 'self'" in form.headers["content-security-policy"]
        # A wrong token shows the form again, saying why; a token that may not read too.
        wrong = browser.post("/login", data={"token": "fw_wrong", "next": f"/dashboard/{MODEL}"})
        assert wrong.status_code == 401
        assert "not valid" in wrong.text
        assert "set-cookie" not in wrong.headers
        predictor = browser.post("/login", data={"token": controlled.tokens[Role.PREDICTOR]})
        assert predictor.status_code == 403
        # A viewer's token is kept in an HttpOnly, SameSite=Strict cookie, and the browser goes back.
        signed_in = browser.post(
            "/login", data={"token": controlled.tokens[Role.VIEWER], "next": f"/dashboard/{MODEL}"}
        )
        assert signed_in.status_code == 303
        assert signed_in.headers["location"] == f"/dashboard/{MODEL}"
        cookie = signed_in.headers["set-cookie"].lower()
        assert "flywheel_token=" in cookie
        assert "httponly" in cookie
        assert "samesite=strict" in cookie
        assert browser.get(f"/dashboard/{MODEL}", headers=page).status_code == 200
        assert browser.get(f"/models/{MODEL}/timeline").status_code == 200  # what the page's script reads
        # The cookie counts for reads only: a write with it alone is refused.
        assert browser.put(f"/models/{MODEL}/policy", json={}).status_code == 401
        # After signing in, only this monitor's dashboard pages are where the browser is sent.
        elsewhere = browser.post(
            "/login", data={"token": controlled.tokens[Role.VIEWER], "next": "//evil.example/x"}
        )
        assert elsewhere.headers["location"] == "/dashboard"
    # Other clients keep the JSON answer.
    refused = controlled.call(None, "monitor", "GET", f"/dashboard/{MODEL}")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"


def test_a_retraining_schedule_is_seen_and_changed_only_from_its_models_workspace(
    controlled: AccessControlled,
) -> None:
    engineer, fraud = controlled.tokens[Role.ML_ENGINEER], controlled.fraud_token
    quarterly = {"cron": "0 3 1 */3 *"}
    schedule = ok(controlled.call(engineer, "trainer", "PUT", f"/schedules/{MODEL}", json=quarterly))
    assert schedule["workspace"] == "risk"
    assert MODEL in [s["model_name"] for s in ok(controlled.call(engineer, "trainer", "GET", "/schedules"))]
    assert MODEL in [
        s["model_name"]
        for s in ok(controlled.call(controlled.tokens[Role.VIEWER], "trainer", "GET", "/schedules"))
    ]
    assert ok(controlled.call(fraud, "trainer", "GET", "/schedules")) == []
    for method in ("PUT", "DELETE"):
        refused = controlled.call(fraud, "trainer", method, f"/schedules/{MODEL}", json=quarterly)
        assert refused.status_code == 404, f"{method}: {refused.text}"
    # A schedule's data must be its workspace's too.
    theirs = f"{bucket_of(controlled)}/workspaces/fraud/datasets/x/credit.csv"
    elsewhere = controlled.call(
        engineer, "trainer", "PUT", f"/schedules/{MODEL}", json=quarterly | {"dataset_uri": theirs}
    )
    assert elsewhere.status_code == 404, elsewhere.text
    assert theirs in elsewhere.json()["detail"]
    assert controlled.call(engineer, "trainer", "DELETE", f"/schedules/{MODEL}").status_code == 204


def bucket_of(controlled: AccessControlled) -> str:
    """`s3://<bucket>` of the platform's store, as a dataset's URI says."""
    uploaded = ok(
        controlled.call(
            controlled.tokens[Role.DATA_SCIENTIST],
            "trainer",
            "POST",
            "/datasets",
            params={"filename": "probe.csv"},
            content=b"a,b\n1,2\n",
        )
    )
    return "/".join(uploaded["uri"].split("/")[:3])


def test_datasets_are_stored_in_the_uploaders_workspace_and_named_only_from_there(
    controlled: AccessControlled,
) -> None:
    scientist, fraud = controlled.tokens[Role.DATA_SCIENTIST], controlled.fraud_token
    csv = credit_risk_frame(50, seed=7).to_csv(index=False).encode()
    dataset = ok(
        controlled.call(scientist, "trainer", "POST", "/datasets", params={"filename": "c.csv"}, content=csv)
    )
    bucket = bucket_of(controlled)
    assert dataset["uri"].startswith(f"{bucket}/workspaces/risk/datasets/")
    request = {
        "target": "default",
        "task": "classification",
        "estimator": "logistic_regression",
        "model_name": "ac-elsewhere",
        "feature_columns": FEATURES,
    }
    # Another workspace's dataset, and one stored before workspaces (default's), read as missing.
    for uri in (dataset["uri"], f"{bucket}/datasets/legacy/credit.csv"):
        refused = controlled.call(fraud, "trainer", "POST", "/jobs", json=request | {"dataset_uri": uri})
        assert refused.status_code == 404, refused.text
        assert refused.json()["detail"] == f"no dataset at {uri}"
    retrain = controlled.call(
        fraud, "trainer", "POST", "/retrain", json={"model": OTHER_MODEL, "dataset_uri": dataset["uri"]}
    )
    assert retrain.status_code in (404, 409), retrain.text  # never queued on risk's data
    assert ok(controlled.call(fraud, "trainer", "GET", "/jobs"))["jobs"] == []


def test_batch_inputs_uploads_and_outputs_stay_in_the_workspace(controlled: AccessControlled) -> None:
    engineer, fraud = controlled.tokens[Role.ML_ENGINEER], controlled.fraud_token
    csv = b"a,b,c,d\n0.5,-1.0,2.0,0.1\n"

    def upload(token: str, model: str) -> dict[str, Any]:
        params = {"filename": "scope.csv", "model": model, "features": ["a", "b", "c", "d"]}
        headers = {"content-type": "application/octet-stream"}
        sent = controlled.call(
            token, "batch", "POST", "/jobs/upload", params=params, content=csv, headers=headers
        )
        job: dict[str, Any] = ok(sent)
        return job

    risk_job, fraud_job = upload(engineer, MODEL), upload(fraud, OTHER_MODEL)
    bucket = bucket_of(controlled)
    assert risk_job["input_uri"].startswith(f"{bucket}/workspaces/risk/batch/uploads/")
    assert fraud_job["input_uri"].startswith(f"{bucket}/workspaces/fraud/batch/uploads/")
    assert fraud_job["output_uri"].startswith(f"{bucket}/workspaces/fraud/")
    features = {"features": ["a", "b", "c", "d"]}
    # Risk's file reads as missing from fraud, as does one stored before workspaces (default's).
    for uri in (risk_job["input_uri"], f"{bucket}/data/legacy.csv"):
        body = {"input_uri": uri, "model": OTHER_MODEL, **features}
        refused = controlled.call(fraud, "batch", "POST", "/jobs", json=body)
        assert refused.status_code == 404, refused.text
        assert refused.json()["detail"] == f"no object at {uri}"
    # Fraud's own file, written into risk's prefix: refused too.
    into_risk = f"{bucket}/workspaces/risk/stolen.csv"
    body = {"input_uri": fraud_job["input_uri"], "model": OTHER_MODEL, "output_uri": into_risk, **features}
    refused = controlled.call(fraud, "batch", "POST", "/jobs", json=body)
    assert refused.status_code == 404, refused.text
    assert into_risk in refused.json()["detail"]
    # Within its workspace, a job names its own input and output.
    mine = f"{bucket}/workspaces/risk/scored/scope.csv"
    body = {"input_uri": risk_job["input_uri"], "model": MODEL, "output_uri": mine, **features}
    assert ok(controlled.call(engineer, "batch", "POST", "/jobs", json=body))["output_uri"] == mine


def test_subscriptions_are_seen_and_changed_only_from_their_workspace(controlled: AccessControlled) -> None:
    engineer, fraud = controlled.tokens[Role.ML_ENGINEER], controlled.fraud_token
    body = {"url": "https://hooks.example.com/flywheel", "event_types": ["model-registered"]}
    created = ok(controlled.call(engineer, "monitor", "POST", "/subscriptions", json=body))
    assert created["workspace"] == "risk"
    subscription = created["id"]
    for method, path in (
        ("GET", f"/subscriptions/{subscription}"),
        ("GET", f"/subscriptions/{subscription}/deliveries"),
        ("POST", f"/subscriptions/{subscription}/test"),
        ("DELETE", f"/subscriptions/{subscription}"),
    ):
        refused = controlled.call(fraud, "monitor", method, path)
        assert refused.status_code == 404, f"{method} {path}: {refused.text}"
    assert subscription not in [
        s["id"] for s in ok(controlled.call(fraud, "monitor", "GET", "/subscriptions"))["subscriptions"]
    ]
    viewer = controlled.tokens[Role.VIEWER]
    assert subscription in [
        s["id"] for s in ok(controlled.call(viewer, "monitor", "GET", "/subscriptions"))["subscriptions"]
    ]
    assert (
        ok(controlled.call(engineer, "monitor", "GET", f"/subscriptions/{subscription}"))["id"]
        == subscription
    )
    assert controlled.call(engineer, "monitor", "DELETE", f"/subscriptions/{subscription}").status_code == 204


def test_a_subscription_hears_only_of_its_workspaces_models(controlled: AccessControlled) -> None:
    engineer, fraud = controlled.tokens[Role.ML_ENGINEER], controlled.fraud_token

    def subscribe(token: str, model: str) -> str:
        body = {
            "url": "https://hooks.example.com/flywheel",
            "event_types": ["model-registered"],
            "model": model,
        }
        created: str = ok(controlled.call(token, "monitor", "POST", "/subscriptions", json=body))["id"]
        return created

    def deliveries(token: str, subscription: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = ok(
            controlled.call(token, "monitor", "GET", f"/subscriptions/{subscription}/deliveries")
        )["deliveries"]
        return found

    risk_own, risk_theirs = subscribe(engineer, MODEL), subscribe(engineer, OTHER_MODEL)
    fraud_theirs, fraud_own = subscribe(fraud, MODEL), subscribe(fraud, OTHER_MODEL)
    for token, model in ((engineer, MODEL), (fraud, OTHER_MODEL)):
        upload = {"files": {"model": tiny_classifier_onnx()}}
        ok(controlled.call(token, "registry", "POST", f"/models/{model}/versions", **upload))
    deadline = time.monotonic() + 60
    while not (deliveries(engineer, risk_own) and deliveries(fraud, fraud_own)):
        assert time.monotonic() < deadline, "the new versions were not queued for their workspaces' webhooks"
        time.sleep(0.5)
    # Each event was matched against every subscription at once: those of the other workspace got none.
    assert [d["event_type"] for d in deliveries(engineer, risk_own)] == ["io.flywheel.model.registered.v1"]
    assert deliveries(engineer, risk_theirs) == []
    assert deliveries(fraud, fraud_theirs) == []
    assert len(deliveries(fraud, fraud_own)) == 1
    for token, subscription in (
        (engineer, risk_own),
        (engineer, risk_theirs),
        (fraud, fraud_theirs),
        (fraud, fraud_own),
    ):
        assert (
            controlled.call(token, "monitor", "DELETE", f"/subscriptions/{subscription}").status_code == 204
        )


def listen_to_alerts(
    controlled: AccessControlled, token: str, heard: list[str], ready: threading.Event, stop: threading.Event
) -> None:
    """Add to `heard` the model of each `model-registered` event the alert stream sends `token`'s caller,
    reconnecting when a stream ends (with Last-Event-ID), until `stop` is set or a minute has passed."""
    last_event_id: str | None = None
    deadline = time.monotonic() + 60
    while not stop.is_set() and time.monotonic() < deadline:
        headers = {"Authorization": f"Bearer {token}"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        try:
            with httpx.stream(
                "GET",
                controlled.url("monitor") + "/alerts/stream",
                params={"types": "model-registered"},
                headers=headers,
                timeout=httpx.Timeout(30, read=1),
            ) as response:
                assert response.status_code == 200, response.read()
                for line in response.iter_lines():
                    if line == ": listening":
                        ready.set()
                    elif line.startswith("id: "):
                        last_event_id = line.removeprefix("id: ")
                    elif line.startswith("data: "):
                        heard.append(json.loads(line.removeprefix("data: "))["data"]["name"])
        except httpx.ReadTimeout:
            pass  # idle for a second: see whether to stop, then listen on


def test_the_alert_stream_sends_a_caller_only_its_workspaces_alerts(controlled: AccessControlled) -> None:
    engineer, fraud = controlled.tokens[Role.ML_ENGINEER], controlled.fraud_token
    listeners = {"risk": engineer, "fraud": fraud, "service": SERVICE_TOKEN}  # the last sees every workspace
    heard: dict[str, list[str]] = {name: [] for name in listeners}
    ready = {name: threading.Event() for name in listeners}
    stop = threading.Event()
    with ThreadPoolExecutor(len(listeners)) as pool:
        futures = [
            pool.submit(listen_to_alerts, controlled, token, heard[name], ready[name], stop)
            for name, token in listeners.items()
        ]
        try:
            for name, started in ready.items():
                assert started.wait(30), f"the {name} stream did not start"
            for token, model in ((engineer, MODEL), (fraud, OTHER_MODEL)):
                upload = {"files": {"model": tiny_classifier_onnx()}}
                ok(controlled.call(token, "registry", "POST", f"/models/{model}/versions", **upload))
            deadline = time.monotonic() + 60
            while not (
                {MODEL, OTHER_MODEL} <= set(heard["service"])
                and MODEL in heard["risk"]
                and OTHER_MODEL in heard["fraud"]
            ):
                assert time.monotonic() < deadline, f"the new versions were not streamed: {heard}"
                assert not any(future.done() for future in futures), [f.result() for f in futures if f.done()]
                time.sleep(0.2)
            time.sleep(1)  # anything else already sent arrives meanwhile
        finally:
            stop.set()
        for future in futures:
            future.result()
    # Each event went to every stream at once: none went to another workspace's caller.
    assert OTHER_MODEL not in heard["risk"], heard
    assert MODEL not in heard["fraud"], heard
