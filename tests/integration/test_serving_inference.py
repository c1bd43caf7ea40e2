"""Serving on real servers with a real registry process: both protocols, the errors, a hot swap on
model-promoted, and every answer logged to prediction-logged. Every test runs twice: through the app's
ASGI layer (an ASGI transport, no socket), and over HTTP to uvicorn with serving's protocol, where the
inference routes are answered by the protocol's fast lane (`shared.http_protocol`)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI

from services.serving.app import create_app as create_serving_app
from services.serving.settings import ServingSettings
from shared.bus import KafkaBus
from shared.events import CloudEvent, PredictionLogged, Topic
from shared.http_protocol import FAST_ROUTES, ServiceHttpProtocol
from tests.conftest import Infrastructure
from tests.integration.conftest import fresh_database, fresh_namespace
from tests.models import tiny_classifier_onnx
from tests.processes import ServiceProcess
from tests.uvicorn_in_loop import bound_port, serving_in_this_loop
from tests.waiting import eventually, eventually_true

ROWS = np.random.default_rng(1).normal(size=(3, 4)).round(3).tolist()


@dataclass
class Serving:
    client: httpx.AsyncClient
    registry: httpx.AsyncClient
    bus: KafkaBus


@asynccontextmanager
async def through_asgi(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://serving") as client,
    ):
        yield client


@asynccontextmanager
async def over_http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """uvicorn serving `app` on a free port with serving's protocol, in this event loop."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, http=ServiceHttpProtocol, log_config=None, access_log=False
    )
    async with serving_in_this_loop(config) as server:
        # The protocol finds the inference routes in the lifespan state: its fast lane answers them.
        assert server.lifespan.state[FAST_ROUTES] is app.state.inference_routes
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{bound_port(server)}") as client:
            yield client


CARRIERS: dict[str, Callable[[FastAPI], AbstractAsyncContextManager[httpx.AsyncClient]]] = {
    "asgi": through_asgi,
    "http-fast-lane": over_http,
}


@pytest.fixture(scope="module", params=list(CARRIERS))
async def serving(
    request: pytest.FixtureRequest, infrastructure: Infrastructure, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Serving]:
    namespace = fresh_namespace()
    bus = KafkaBus(infrastructure.kafka_bootstrap, client_id="tests", namespace=namespace)
    async with fresh_database(infrastructure) as database_url:  # each carrier's registry starts empty
        environment = infrastructure.isolated_environment(database_url, namespace)
        registry = ServiceProcess(
            "registry", environment, tmp_path_factory.mktemp("logs") / "registry.log"
        ).start()
        try:
            registry.wait_until_ready()
            settings = infrastructure.settings(kafka_namespace=namespace, s3_bucket="flywheel-tests")
            app = create_serving_app(
                settings, ServingSettings(registry_url=registry.url, max_request_bytes=64 * 1024)
            )
            await bus.start()
            async with (
                httpx.AsyncClient(base_url=registry.url) as registry_client,
                CARRIERS[request.param](app) as client,
            ):
                uploaded = await registry_client.post(
                    "/models/credit/versions", files={"model": tiny_classifier_onnx()}
                )
                assert uploaded.status_code == 201, uploaded.text
                await registry_client.put("/models/credit/aliases/production", json={"version": 1})
                yield Serving(client, registry_client, bus)
        finally:
            await bus.stop()
            registry.stop()


def v2_body(rows: list[list[Any]], datatype: str = "FP32") -> dict[str, Any]:
    return {"inputs": [{"name": "X", "shape": [len(rows), 4], "datatype": datatype, "data": rows}]}


async def test_v2_inference_answers_with_the_production_version(serving: Serving) -> None:
    response = await serving.client.post(
        "/v2/models/credit/infer", json=v2_body(ROWS), headers={"X-Request-Id": "req-v2"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("credit", "1", "req-v2")
    assert response.headers["X-Model-Version"] == "1"
    outputs = {output["name"]: output for output in body["outputs"]}
    assert outputs["label"]["shape"] == [3]
    assert outputs["probabilities"]["shape"] == [3, 2]
    assert outputs["probabilities"]["datatype"] == "FP32"


async def test_v1_instances_answer_labels_and_probabilities(serving: Serving) -> None:
    response = await serving.client.post("/v1/models/credit:predict", json={"instances": ROWS[:2]})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == 2
    assert abs(sum(predictions[0]["probabilities"]) - 1) < 1e-5
    assert response.json()["model_version"] == "1"


async def test_model_metadata_lists_the_signature(serving: Serving) -> None:
    metadata = (await serving.client.get("/v2/models/credit")).json()
    assert metadata["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [-1, 4]}]
    assert (await serving.client.get("/v2/models/credit/ready")).json()["ready"] is True


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/v2/models/nope/infer", v2_body(ROWS), 404, "nope"),
        ("/v2/models/credit/versions/9/infer", v2_body(ROWS), 404, "no version 9"),
        ("/v2/models/credit/infer", v2_body(ROWS, "FP64"), 422, "FP32"),
        (
            "/v2/models/credit/infer",
            {"inputs": [{"name": "X", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]},
            422,
            "[-1, 4]",
        ),
        (
            "/v2/models/credit/infer",
            {"inputs": [{"name": "Y", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]},
            422,
            "'Y'",
        ),
        ("/v2/models/credit/infer", v2_body([[1.0, "NaN", 2.0, 3.0]]), 422, "non-finite"),
        ("/v1/models/credit:predict", {"instances": [[1, 2, 3]]}, 422, "expects 4"),
    ],
)
async def test_bad_requests_are_refused_naming_the_problem(
    serving: Serving, path: str, body: dict[str, Any], status: int, message: str
) -> None:
    response = await serving.client.post(path, json=body)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


async def test_an_oversized_body_is_413(serving: Serving) -> None:
    response = await serving.client.post("/v2/models/credit/infer", content=b"x" * (65 * 1024))
    assert response.status_code == 413


async def test_every_answer_is_logged_to_prediction_logged_as_answered(serving: Serving) -> None:
    request_id = f"logged-{uuid.uuid4().hex[:8]}"
    response = await serving.client.post(
        "/v2/models/credit/infer", json=v2_body(ROWS[:1]), headers={"X-Request-Id": request_id}
    )
    answered = {output["name"]: output["data"] for output in response.json()["outputs"]}
    logged: list[Any] = []

    async def collect(event: CloudEvent) -> None:
        logged.extend(r for r in event.payload_as(PredictionLogged).records() if r.request_id == request_id)

    subscription = await serving.bus.subscribe(
        Topic.PREDICTION_LOGGED, f"observer-{uuid.uuid4().hex[:6]}", collect
    )
    try:
        await eventually(lambda: logged != [], within=30, what="the prediction logged")
    finally:
        await subscription.close()
    record = logged[0]
    assert (record.model, record.version) == ("credit", 1)
    assert record.features == pytest.approx(ROWS[0], rel=1e-6)  # as the model saw them: float32
    assert record.outputs["label"] == answered["label"][0]
    assert record.outputs["probabilities"] == pytest.approx(answered["probabilities"][:2])


async def test_v1_rows_are_logged_as_the_caller_wrote_them(serving: Serving) -> None:
    """v1 rows of numbers are logged as the request's JSON wrote them (the unit tests show the text is
    copied, not formatted again): written here as a JSON encoder would not (`1.234e+00`), they reach Kafka
    as valid events with the numbers that were sent, beside the answers."""
    request_id = f"logged-v1-{uuid.uuid4().hex[:8]}"
    rows_text = ", ".join("[" + ", ".join(f"{value:.3e}" for value in row) + "]" for row in ROWS)
    response = await serving.client.post(
        "/v1/models/credit:predict",
        content=f'{{"instances": [{rows_text}]}}'.encode(),
        headers={"X-Request-Id": request_id, "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    answered = response.json()["predictions"]
    logged: list[Any] = []

    async def collect(event: CloudEvent) -> None:
        logged.extend(
            r for r in event.payload_as(PredictionLogged).records() if r.request_id.startswith(request_id)
        )

    subscription = await serving.bus.subscribe(
        Topic.PREDICTION_LOGGED, f"observer-{uuid.uuid4().hex[:6]}", collect
    )
    try:
        await eventually(lambda: len(logged) == len(ROWS), within=30, what="the three rows logged")
    finally:
        await subscription.close()
    assert [record.request_id for record in logged] == [request_id, f"{request_id}:1", f"{request_id}:2"]
    for record, row, answer in zip(logged, ROWS, answered, strict=True):
        assert record.features == pytest.approx(row, rel=1e-3)
        assert record.outputs["label"] == answer["label"]
        assert record.outputs["probabilities"] == pytest.approx(answer["probabilities"])


async def test_promoting_a_new_version_swaps_what_answers(serving: Serving) -> None:
    uploaded = await serving.registry.post("/models/credit/versions", files={"model": tiny_classifier_onnx()})
    version = uploaded.json()["version"]
    await serving.registry.put("/models/credit/aliases/production", json={"version": version})

    async def answered_by_new_version() -> bool:
        response = await serving.client.post("/v2/models/credit/infer", json=v2_body(ROWS))
        assert response.status_code == 200, response.text
        return bool(response.headers["X-Model-Version"] == str(version))

    await eventually_true(answered_by_new_version, what=f"v{version} answering")


async def test_deleting_a_version_an_alias_or_the_model_stops_serving_it(serving: Serving) -> None:
    uploaded = await upload_versions(serving, "retired", ["production", "staging"])
    production, staging = uploaded["production"], uploaded["staging"]
    assert (await serving.registry.delete("/models/retired/aliases/staging")).status_code == 204
    default_route = "/v2/models/retired/infer"

    async def status(path: str) -> int:
        return (await serving.client.post(path, json=v2_body(ROWS))).status_code

    def refused(path: str) -> Callable[[], Awaitable[bool]]:
        async def is_refused() -> bool:
            return await status(path) == 404

        return is_refused

    assert await status(default_route) == 200
    assert await status(f"/v2/models/retired/versions/{staging}/infer") == 200  # loaded and kept from now on

    assert (await serving.registry.delete(f"/models/retired/versions/{staging}")).status_code == 204
    await eventually_true(refused(f"/v2/models/retired/versions/{staging}/infer"), what="deleted version 404")
    assert (await serving.registry.delete("/models/retired/aliases/production")).status_code == 204
    await eventually_true(refused(default_route), what="deleted alias 404")
    assert (
        await status(f"/v2/models/retired/versions/{production}/infer") == 200
    )  # the version is still there

    assert (await serving.registry.delete("/models/retired")).status_code == 204
    await eventually_true(
        refused(f"/v2/models/retired/versions/{production}/infer"), what="deleted model 404"
    )


async def test_metrics_count_predictions_batches_and_errors_per_model(serving: Serving) -> None:
    await serving.client.post("/v2/models/credit/infer", json=v2_body(ROWS))
    await serving.client.post("/v2/models/credit/infer", json=v2_body(ROWS, "FP64"))
    metrics = (await serving.client.get("/metrics")).text
    assert 'flywheel_serving_predictions_total{model="credit",protocol="v2",version=' in metrics
    assert 'flywheel_serving_batch_rows_count{model="credit"' in metrics
    assert 'flywheel_serving_request_errors_total{model="credit",status="422"}' in metrics
    assert 'flywheel_serving_queue_depth{model="credit"' in metrics
    assert "flywheel_serving_prediction_log_buffered" in metrics
    hot_route = 'flywheel_http_requests_total{method="POST",route="/v2/models/{name}/infer",service="serving"'
    assert f'{hot_route},status="200"}}' in metrics
    assert f'{hot_route},status="422"}}' in metrics


async def test_a_hot_swap_under_steady_load_fails_no_request(serving: Serving) -> None:
    statuses: list[int] = []
    versions: set[str] = set()
    stop = asyncio.Event()

    async def steady_load() -> None:
        while not stop.is_set():
            response = await serving.client.post("/v2/models/credit/infer", json=v2_body(ROWS))
            statuses.append(response.status_code)
            versions.add(response.headers.get("X-Model-Version", "?"))

    clients = [asyncio.create_task(steady_load()) for _ in range(8)]
    try:
        await eventually(lambda: len(statuses) > 50, within=30, what="load under way")
        before = set(versions)
        uploaded = await serving.registry.post(
            "/models/credit/versions", files={"model": tiny_classifier_onnx()}
        )
        new_version = str(uploaded.json()["version"])
        await serving.registry.put("/models/credit/aliases/production", json={"version": int(new_version)})
        await eventually(
            lambda: new_version in versions, within=60, what=f"v{new_version} answering under load"
        )
        answered = len(statuses)
        await eventually(lambda: len(statuses) > answered + 50, within=30, what="load after the swap")
    finally:
        stop.set()
        await asyncio.gather(*clients)
    assert set(statuses) == {200}, f"{len(statuses) - statuses.count(200)} of {len(statuses)} failed"
    assert new_version not in before


async def upload_versions(serving: Serving, name: str, aliases: list[str]) -> dict[str, str]:
    """One new version of `name` per alias, each alias pointing at its own; alias -> version."""
    versions = {}
    for alias in aliases:
        uploaded = await serving.registry.post(
            f"/models/{name}/versions", files={"model": tiny_classifier_onnx()}
        )
        versions[alias] = str(uploaded.json()["version"])
        moved = await serving.registry.put(
            f"/models/{name}/aliases/{alias}", json={"version": int(versions[alias])}
        )
        assert moved.status_code == 200, moved.text
    return versions


async def answering_versions(
    serving: Serving, name: str, requests: int, request_id: str | None = None
) -> list[str]:
    headers = {"X-Request-Id": request_id} if request_id else {}

    async def one() -> str:
        response = await serving.client.post(
            f"/v2/models/{name}/infer", json=v2_body(ROWS[:1]), headers=headers
        )
        assert response.status_code == 200, response.text
        return str(response.headers["X-Model-Version"])

    answered: list[str] = []
    for _ in range(0, requests, 50):  # in waves, like concurrent callers
        answered += await asyncio.gather(*(one() for _ in range(min(50, requests - len(answered)))))
    return answered


async def test_a_canary_split_sends_each_alias_its_share_of_requests(serving: Serving) -> None:
    versions = await upload_versions(serving, "split", ["production", "canary"])
    assert set(await answering_versions(serving, "split", 10)) == {versions["production"]}  # no policy yet

    policy = {"split": {"production": 80, "canary": 20}}
    assert (await serving.registry.put("/models/split/traffic-policy", json=policy)).status_code == 200

    async def canary_answers() -> bool:  # the policy reaches serving over traffic-policy-changed
        return versions["canary"] in await answering_versions(serving, "split", 20)

    await eventually_true(canary_answers, what="the canary answering after the policy changed")
    answered = await answering_versions(serving, "split", 1000)
    canary_share = answered.count(versions["canary"]) / len(answered)
    # 1,000 draws at p = 0.2: the standard deviation of the share is 0.0126; 5 of them is 0.063.
    assert 0.2 - 0.063 < canary_share < 0.2 + 0.063, canary_share
    assert set(answered) == {versions["production"], versions["canary"]}
    # The caller's request id picks the alias, so a retried request lands where it did before.
    assert len(set(await answering_versions(serving, "split", 20, request_id="retry-me"))) == 1
    # An explicit version is outside the policy.
    explicit = await serving.client.post(
        f"/v2/models/split/versions/{versions['canary']}/infer", json=v2_body(ROWS)
    )
    assert explicit.headers["X-Model-Version"] == versions["canary"]

    assert (await serving.registry.delete("/models/split/traffic-policy")).status_code == 204

    async def only_production_answers() -> bool:
        return set(await answering_versions(serving, "split", 50)) == {versions["production"]}

    await eventually_true(only_production_answers, what="production alone after the policy was removed")


SHADOWS_ANSWERED = (
    'flywheel_serving_shadow_requests_total{alias="staging",model="shadowed",outcome="answered"}'
)


async def test_a_shadow_answers_every_request_in_the_log_but_never_to_the_caller(serving: Serving) -> None:
    versions = await upload_versions(serving, "shadowed", ["production", "staging"])
    shadows_before = await metric_value(serving, SHADOWS_ANSWERED)
    policy = {"split": {"production": 100}, "shadow": ["staging"]}
    assert (await serving.registry.put("/models/shadowed/traffic-policy", json=policy)).status_code == 200
    request_ids = [f"shadowed-{uuid.uuid4().hex[:8]}" for _ in range(5)]
    answers = []
    for request_id in request_ids:
        response = await serving.client.post(
            "/v2/models/shadowed/infer", json=v2_body(ROWS[:1]), headers={"X-Request-Id": request_id}
        )
        assert response.headers["X-Model-Version"] == versions["production"]
        answers.append({output["name"]: output["data"] for output in response.json()["outputs"]})
    logged: dict[tuple[str, bool], Any] = {}

    async def collect(event: CloudEvent) -> None:
        for record in event.payload_as(PredictionLogged).records():
            if record.request_id in request_ids:
                logged[(record.request_id, record.shadow)] = record

    subscription = await serving.bus.subscribe(
        Topic.PREDICTION_LOGGED, f"observer-{uuid.uuid4().hex[:6]}", collect
    )
    try:
        await eventually(
            lambda: len(logged) == 2 * len(request_ids), within=30, what="primary and shadow logged"
        )
    finally:
        await subscription.close()
    for request_id, answer in zip(request_ids, answers, strict=True):
        primary, shadow = logged[(request_id, False)], logged[(request_id, True)]
        assert (primary.version, primary.alias) == (int(versions["production"]), "production")
        assert (shadow.version, shadow.alias) == (int(versions["staging"]), "staging")
        assert shadow.features == primary.features
        assert shadow.outputs["label"] == answer["label"][0]  # the same model file: the same answer
    # The counter lives as long as the process, which runs this module once per carrier.
    assert await metric_value(serving, SHADOWS_ANSWERED) - shadows_before == 5


async def metric_value(serving: Serving, sample: str) -> float:
    """One sample's value (name and labels as /metrics writes them) on serving's /metrics; 0 if absent."""
    for line in (await serving.client.get("/metrics")).text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    return 0.0
