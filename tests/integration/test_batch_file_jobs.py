"""File jobs on the real servers, with a real registry process: CSV and Parquet objects scored into a
predictions file next to them (columns mapped by name or by position, bad rows rejected with reasons,
outputs downloadable by a presigned link), uploads, refusals naming the problem, a sample reported to
prediction-logged, and jobs that survive their service being killed or stopped."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi import FastAPI

from flywheel.cli import main
from services.batch.app import create_app as create_batch_app
from services.batch.job_runner import part_key
from services.batch.settings import BatchSettings
from shared.artifacts import ArtifactNotFound, S3ArtifactStore
from shared.bus import KafkaBus
from shared.events import CloudEvent, PredictionLogged, PredictionRecord, Topic
from tests.conftest import Infrastructure
from tests.integration.conftest import fresh_namespace
from tests.models import per_column_classifier_onnx, tiny_classifier_onnx
from tests.processes import ServiceProcess
from tests.waiting import eventually, eventually_true

SAMPLE_RATE = 0.25


@dataclass
class Batch:
    """A batch app in this process and a registry process, alone in a database and a Kafka namespace."""

    client: httpx.AsyncClient
    app: FastAPI
    store: S3ArtifactStore
    bus: KafkaBus
    environment: dict[str, str]  # what a batch process needs to join this platform
    prefix: str  # every object the tests write is under it
    written: list[str] = field(default_factory=list)

    async def put(self, name: str, content: bytes) -> str:
        stored = await self.store.put_bytes(f"{self.prefix}/{name}", content)
        self.written.append(stored.key)
        return stored.uri

    async def put_frame(self, name: str, frame: pd.DataFrame) -> str:
        if name.endswith(".csv"):
            return await self.put(name, frame.to_csv(index=False).encode())
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink, row_group_size=700)
        return await self.put(name, sink.getvalue())

    async def submit(self, **request: Any) -> dict[str, Any]:
        response = await self.client.post("/jobs", json=request)
        assert response.status_code == 201, response.text
        job: dict[str, Any] = response.json()
        self.written.append(self.store.key_from_uri(job["output_uri"]))
        return job

    async def finished(
        self, job_id: str, client: httpx.AsyncClient | None = None, within: float = 120
    ) -> dict[str, Any]:
        job: dict[str, Any] = {}

        async def ended() -> bool:
            job.update((await (client or self.client).get(f"/jobs/{job_id}")).json())
            return job["status"] in ("succeeded", "failed")

        await eventually_true(ended, within=within, what=f"file job {job_id} ending")
        return job

    async def output(self, job: dict[str, Any]) -> pd.DataFrame:
        """The job's output, fetched through its presigned link (text kept as text for CSV)."""
        async with httpx.AsyncClient() as plain:
            response = await plain.get(job["download_url"])
        assert response.status_code == 200, response.text
        if job["format"] == "csv":
            return pd.read_csv(
                io.BytesIO(response.content), dtype={"id": str, "note": str}, keep_default_na=False
            )
        return pq.read_table(io.BytesIO(response.content)).to_pandas()


@pytest.fixture(scope="module")
async def batch(
    infrastructure: Infrastructure, module_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Batch]:
    namespace = fresh_namespace()
    environment = infrastructure.isolated_environment(module_database_url, namespace)
    logs = tmp_path_factory.mktemp("logs")
    registry = ServiceProcess("registry", environment, logs / "registry.log").start()
    settings = infrastructure.settings(
        database_url=module_database_url, kafka_namespace=namespace, s3_bucket="flywheel-tests"
    )
    bus = KafkaBus(infrastructure.kafka_bootstrap, client_id="tests", namespace=namespace)
    store = S3ArtifactStore(
        infrastructure.s3_endpoint,
        access_key=infrastructure.s3_access_key,
        secret_key=infrastructure.s3_secret_key,
        bucket="flywheel-tests",
    )
    try:
        registry.wait_until_ready()
        async with httpx.AsyncClient(base_url=registry.url) as registry_client:
            for name, model in (
                ("columns", per_column_classifier_onnx()),
                ("matrix", tiny_classifier_onnx()),
            ):
                uploaded = await registry_client.post(f"/models/{name}/versions", files={"model": model})
                assert uploaded.status_code == 201, uploaded.text
                await registry_client.put(f"/models/{name}/aliases/production", json={"version": 1})
        batch_settings = BatchSettings(
            registry_url=registry.url,
            chunk_rows=1000,
            job_poll_seconds=0.2,
            max_concurrent_jobs=2,
            max_upload_bytes=4 * 1024 * 1024,
            prediction_log_sample_rate=SAMPLE_RATE,
            intra_op_threads=1,
        )
        app = create_batch_app(settings, batch_settings)
        await bus.start()
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://batch") as client,
        ):
            under_test = Batch(
                client,
                app,
                store,
                bus,
                {
                    **environment,
                    "FLYWHEEL_BATCH_REGISTRY_URL": registry.url,
                    "FLYWHEEL_BATCH_INTRA_OP_THREADS": "1",
                },
                f"tests/batch-{uuid.uuid4().hex[:8]}",
            )
            yield under_test
            for key in under_test.written:
                await store.delete(key)
    finally:
        await bus.stop()
        registry.stop()


def credit_frame(rows: int, seed: int = 0) -> pd.DataFrame:
    """Rows for the per-column model: an id, its features (in another order), and a note it ignores."""
    generator = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "id": [f"{index:05d}" for index in range(rows)],
            "region": generator.choice(["north", "south", "east"], rows),
            "age": generator.integers(20, 70, rows).astype(float),
            "income": generator.normal(50, 10, rows).round(3),
            "note": [f"row {index}, as written" for index in range(rows)],
        }
    )


def probabilities_of(model: bytes, inputs: dict[str, np.ndarray]) -> np.ndarray:
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["probabilities"], inputs)[0])


async def test_a_csv_job_takes_columns_by_name_keeps_the_others_and_rejects_bad_rows(batch: Batch) -> None:
    frame = credit_frame(2500)
    frame["income"] = frame["income"].astype(object)
    frame.loc[7, "income"] = "n/a"
    frame.loc[1801, "income"] = ""
    input_uri = await batch.put_frame("credit.csv", frame)
    job = await batch.finished((await batch.submit(input_uri=input_uri, model="columns"))["id"])

    assert job["status"] == "succeeded", job["error"]
    assert job["output_uri"] == input_uri.removesuffix(".csv") + ".predictions.csv"
    assert (job["model_version"], job["alias"], job["progress"]) == (1, "production", 1.0)
    assert (job["rows_total"], job["rows_scored"], job["rows_rejected"]) == (2500, 2498, 2)
    assert job["rejections"] == [
        {"row": 7, "reason": "feature 'income' is \"n/a\"; the model expects FP32 numbers"},
        {"row": 1801, "reason": "feature 'income' is \"\"; the model expects FP32 numbers"},
    ]
    output = await batch.output(job)
    assert list(output.columns) == [
        *frame.columns,
        "label",
        "probabilities_0",
        "probabilities_1",
        "model_version",
        "_error",
    ]
    assert output["id"].tolist() == frame["id"].tolist()  # every row once, in order, text as written
    assert output["note"].tolist() == frame["note"].tolist()
    assert output.loc[7, "_error"] == job["rejections"][0]["reason"]
    assert output.loc[7, "label"] == ""
    assert (output["model_version"] == 1).all()
    good = frame.drop(index=[7, 1801])
    expected = probabilities_of(
        per_column_classifier_onnx(),
        {
            "income": good["income"].astype(np.float32).to_numpy().reshape(-1, 1),
            "age": good["age"].astype(np.float32).to_numpy().reshape(-1, 1),
            "region": good["region"].to_numpy(dtype=object).reshape(-1, 1),
        },
    )
    scored = output.drop(index=[7, 1801])
    assert np.allclose(scored["probabilities_1"].astype(float), expected[:, 1], atol=1e-6)


async def test_a_parquet_job_feeds_a_single_input_from_the_first_numeric_columns(batch: Batch) -> None:
    generator = np.random.default_rng(5)
    features = generator.normal(size=(3000, 5)).astype(np.float32)
    frame = pd.DataFrame({"name": [f"n{index}" for index in range(3000)]})
    for column in range(5):
        frame[f"f{column}"] = features[:, column]
    input_uri = await batch.put_frame("matrix.parquet", frame)
    job = await batch.finished((await batch.submit(input_uri=input_uri, model="matrix", version=1))["id"])

    assert job["status"] == "succeeded", job["error"]
    assert (job["alias"], job["rows_total"], job["rows_scored"], job["rows_rejected"]) == (
        None,
        3000,
        3000,
        0,
    )
    output = await batch.output(job)
    assert output["name"].tolist() == frame["name"].tolist()
    assert output["f4"].dtype == np.float32  # the input's types are kept
    assert output["label"].dtype == np.int64
    expected = probabilities_of(tiny_classifier_onnx(), {"X": features[:, :4]})
    assert np.allclose(output["probabilities_0"], expected[:, 0], atol=1e-6)
    assert output["_error"].isna().all()


async def test_listed_features_feed_a_single_input_in_their_order(batch: Batch) -> None:
    generator = np.random.default_rng(6)
    frame = pd.DataFrame(generator.normal(size=(50, 5)), columns=["a", "b", "c", "d", "e"]).round(4)
    input_uri = await batch.put_frame("listed.csv", frame)
    features = ["e", "c", "a", "b"]
    job = await batch.finished(
        (await batch.submit(input_uri=input_uri, model="matrix", features=features))["id"]
    )
    assert job["status"] == "succeeded", job["error"]
    assert job["features"] == features
    output = await batch.output(job)
    expected = probabilities_of(tiny_classifier_onnx(), {"X": frame[features].to_numpy(dtype=np.float32)})
    assert np.allclose(output["probabilities_1"], expected[:, 1], atol=1e-6)


async def test_an_uploaded_file_is_stored_then_scored_next_to_itself(batch: Batch) -> None:
    frame = credit_frame(40)
    response = await batch.client.post(
        "/jobs/upload",
        params={"filename": "mine.csv", "model": "columns", "alias": "production"},
        content=frame.to_csv(index=False).encode(),
        headers={"content-type": "application/octet-stream"},
    )
    assert response.status_code == 201, response.text
    job = await batch.finished(response.json()["id"])
    batch.written += [batch.store.key_from_uri(job["input_uri"]), batch.store.key_from_uri(job["output_uri"])]
    assert job["status"] == "succeeded", job["error"]
    assert "/workspaces/default/batch/uploads/" in job["input_uri"]
    assert job["input_uri"].endswith("/mine.csv")
    assert job["output_uri"] == job["input_uri"].removesuffix(".csv") + ".predictions.csv"
    assert (await batch.output(job))["id"].tolist() == frame["id"].tolist()


async def test_every_row_rejected_fails_the_job_with_the_reasons(batch: Batch) -> None:
    frame = credit_frame(5).assign(income="unknown")
    job = await batch.finished(
        (await batch.submit(input_uri=await batch.put_frame("hopeless.csv", frame), model="columns"))["id"]
    )
    assert job["status"] == "failed"
    assert job["error"].startswith("every one of the 5 rows was rejected, e.g. row 0: feature 'income'")
    assert job["rows_rejected"] == 5
    assert job["download_url"] is None


async def test_a_missing_feature_column_fails_the_job_at_start_naming_it(batch: Batch) -> None:
    frame = credit_frame(5).drop(columns=["age"])
    job = await batch.finished(
        (await batch.submit(input_uri=await batch.put_frame("no-age.csv", frame), model="columns"))["id"]
    )
    assert job["status"] == "failed"
    assert job["error"].startswith("the file has no column 'age' for the model's inputs")
    assert (job["rows_scored"], job["rows_rejected"]) == (0, 0)


async def test_a_sample_of_scored_rows_is_reported_to_prediction_logged(batch: Batch) -> None:
    frame = credit_frame(1500, seed=9)
    input_uri = await batch.put_frame("sampled.csv", frame)
    logged: list[PredictionRecord] = []

    async def collect(event: CloudEvent) -> None:
        logged.extend(event.payload_as(PredictionLogged).records())

    def mine() -> list[PredictionRecord]:
        return [record for record in logged if record.request_id.split(":")[0] == job["id"]]

    subscription = await batch.bus.subscribe(
        Topic.PREDICTION_LOGGED, f"observer-{uuid.uuid4().hex[:6]}", collect
    )
    job: dict[str, Any] = {}
    try:
        job = await batch.finished((await batch.submit(input_uri=input_uri, model="columns"))["id"])
        assert job["status"] == "succeeded", job["error"]
        await eventually(lambda: len(mine()) == job["rows_logged"], within=30, what="the sample logged")
    finally:
        await subscription.close()
    assert 0.15 * 1500 < job["rows_logged"] < 0.35 * 1500
    output = await batch.output(job)
    for record in mine()[:20]:
        row = int(record.request_id.partition(":")[2] or 0)
        assert (record.model, record.version, record.alias) == ("columns", 1, "production")
        assert record.features == {
            "income": pytest.approx(frame.loc[row, "income"], rel=1e-6),
            "age": frame.loc[row, "age"],
            "region": frame.loc[row, "region"],
        }
        assert record.outputs["label"] == output.loc[row, "label"]
        assert record.outputs["probabilities"][1] == pytest.approx(
            output.loc[row, "probabilities_1"], rel=1e-6
        )


async def test_jobs_are_listed_newest_first_by_model_and_status(batch: Batch) -> None:
    first = await batch.submit(input_uri=await batch.put_frame("one.csv", credit_frame(3)), model="columns")
    second = await batch.submit(input_uri=await batch.put_frame("two.csv", credit_frame(3)), model="columns")
    for job in (first, second):
        await batch.finished(job["id"])
    listed = (await batch.client.get("/jobs", params={"model": "columns", "page_size": 2})).json()
    assert [job["id"] for job in listed["jobs"]] == [second["id"], first["id"]]
    assert listed["next_page_token"] is not None
    failed = (await batch.client.get("/jobs", params={"status": "failed"})).json()["jobs"]
    assert all(job["status"] == "failed" for job in failed)
    assert (await batch.client.get("/jobs", params={"model": "matrix"})).json()["jobs"] != []


@pytest.mark.parametrize(
    ("request_body", "status", "message"),
    [
        ({"model": "nope"}, 404, "no model version nope @production"),
        ({"model": "columns", "version": 9}, 404, "no model version columns v9"),
        ({"model": "columns", "input": "missing.csv"}, 404, "no object at s3://flywheel-tests/"),
        ({"model": "columns", "input": "data.json"}, 415, "must end in .csv, .parquet, .pq"),
        ({"model": "columns", "version": 1, "alias": "production"}, 422, "a version or an alias, not both"),
        ({"model": "columns", "features": ["income"]}, 422, "takes the file's columns of those names"),
        ({"model": "matrix", "features": ["a", "b"]}, 422, "takes 4 features; 2 listed"),
        ({"model": "columns", "output_uri": "s3://elsewhere/out.csv"}, 422, "is not in this store"),
        ({"model": "columns", "input_uri": "s3://elsewhere/in.csv"}, 422, "is not in this store"),
        ({"model": "columns", "input_uri": "s3://flywheel-tests/a/../../in.csv"}, 422, "'..' path segment"),
        ({"model": "columns", "input_uri": "file:///etc/passwd"}, 422, "is not in this store"),
        ({"model": "columns", "output_name": "out.parquet"}, 422, "must name a csv file like the input"),
        ({"model": "columns", "output_name": "exists.csv"}, 422, "the input is never overwritten"),
    ],
)
async def test_jobs_that_cannot_run_are_refused_naming_the_problem(
    batch: Batch, request_body: dict[str, Any], status: int, message: str
) -> None:
    existing = await batch.put("exists.csv", credit_frame(2).to_csv(index=False).encode())
    body = dict(request_body)
    if "input" in body:
        body["input_uri"] = existing.replace("exists.csv", body.pop("input"))
    body.setdefault("input_uri", existing)
    if "output_name" in body:
        body["output_uri"] = existing.replace("exists.csv", body.pop("output_name"))
    response = await batch.client.post("/jobs", json=body)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert message in (detail if isinstance(detail, str) else str(detail))


@pytest.mark.parametrize(
    ("filename", "content", "headers", "status", "message"),
    [
        ("rows.parquet", b"a,b\n1,2\n", {}, 415, "is not a Parquet file"),
        ("rows.csv", b"PAR1\x00\x01", {}, 415, "is not CSV text"),
        ("rows.txt", b"a\n", {}, 415, "is not a CSV or Parquet file"),
        ("rows.csv", b"a\n" * (3 * 1024 * 1024), {}, 413, "limit of 4194304 bytes"),
        ("rows.csv", b"a\n", {"content-type": "multipart/form-data; boundary=x"}, 415, "not a form"),
        ("../rows.csv", b"a\n", {}, 422, "not a plain file name"),
    ],
)
async def test_uploads_that_cannot_be_scored_are_refused_and_nothing_is_kept(
    batch: Batch, filename: str, content: bytes, headers: dict[str, str], status: int, message: str
) -> None:
    async def body() -> AsyncIterator[bytes]:  # streamed: no content-length to refuse early on
        for start in range(0, len(content), 1024 * 1024):
            yield content[start : start + 1024 * 1024]

    before = (await batch.client.get("/jobs", params={"page_size": 1000})).json()["jobs"]
    response = await batch.client.post(
        "/jobs/upload",
        params={"filename": filename, "model": "columns"},
        content=body(),
        headers={"content-type": "application/octet-stream", **headers},
    )
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    assert (await batch.client.get("/jobs", params={"page_size": 1000})).json()["jobs"] == before


async def test_an_unknown_job_is_404(batch: Batch) -> None:
    response = await batch.client.get("/jobs/nope")
    assert response.status_code == 404
    assert response.json()["detail"] == "no file job 'nope'"


async def test_a_second_job_on_the_same_output_is_refused_while_the_first_runs(batch: Batch) -> None:
    input_uri = await batch.put_frame("busy.csv", credit_frame(100_000))
    first = await batch.submit(input_uri=input_uri, model="columns")
    response = await batch.client.post("/jobs", json={"input_uri": input_uri, "model": "columns"})
    assert response.status_code == 409, response.text
    assert response.json()["detail"].startswith(f"job {first['id']} is already writing {first['output_uri']}")
    assert (await batch.finished(first["id"]))["status"] == "succeeded"
    again = await batch.submit(input_uri=input_uri, model="columns")  # the output is free again
    assert (await batch.finished(again["id"]))["status"] == "succeeded"


RESTART_SETTINGS = {
    "FLYWHEEL_BATCH_CHUNK_ROWS": "1000",
    "FLYWHEEL_BATCH_JOB_HEARTBEAT_SECONDS": "0.5",
    "FLYWHEEL_BATCH_STALE_JOB_SECONDS": "3",
    "FLYWHEEL_BATCH_JOB_POLL_SECONDS": "0.2",
    "FLYWHEEL_BATCH_PREDICTION_LOG_SAMPLE_RATE": "0",
}


@pytest.mark.parametrize("stop", ["killed", "stopped"])
async def test_a_job_goes_on_from_its_last_chunk_when_its_service_comes_back(
    batch: Batch, fresh_database_url: str, tmp_path: Path, stop: str
) -> None:
    environment = {**batch.environment, "FLYWHEEL_DATABASE_URL": fresh_database_url, **RESTART_SETTINGS}
    frame = credit_frame(200_000, seed=4)
    input_uri = await batch.put_frame(f"restart-{stop}.csv", frame)
    first = ServiceProcess("batch", environment, tmp_path / "batch-1.log").start()
    second = ServiceProcess("batch", environment, tmp_path / "batch-2.log")
    try:
        first.wait_until_ready()
        async with httpx.AsyncClient(base_url=first.url) as client:
            response = await client.post("/jobs", json={"input_uri": input_uri, "model": "columns"})
            assert response.status_code == 201, response.text
            job_id = response.json()["id"]
            batch.written.append(batch.store.key_from_uri(response.json()["output_uri"]))

            async def some_chunks_done() -> bool:
                return int((await client.get(f"/jobs/{job_id}")).json()["rows_scored"]) >= 5000

            await eventually_true(some_chunks_done, what="5 chunks scored")
        if stop == "killed":
            first.kill()
        else:
            first.stop()
        second.start().wait_until_ready()
        async with httpx.AsyncClient(base_url=second.url) as client:
            job = await batch.finished(job_id, client, within=180)
    finally:
        first.stop()
        second.stop()
    assert job["status"] == "succeeded", job["error"]
    # A killed replica's start counts; a cleanly stopped one gives its job back without counting it.
    assert job["attempts"] == (2 if stop == "killed" else 1)
    assert job["resumed_at_row"] >= 5000
    assert job["resumed_at_row"] % 1000 == 0
    assert (job["rows_total"], job["rows_scored"], job["rows_rejected"]) == (200_000, 200_000, 0)
    output = await batch.output(job)
    assert output["id"].tolist() == frame["id"].tolist()  # every row exactly once, in order
    with pytest.raises(ArtifactNotFound):
        await batch.store.stat(part_key(job_id, 0, "csv"))


def test_the_cli_scores_a_local_file_follows_it_and_downloads_the_predictions(
    batch: Batch, fresh_database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    process = ServiceProcess(
        "batch", {**batch.environment, "FLYWHEEL_DATABASE_URL": fresh_database_url}, tmp_path / "batch.log"
    ).start()
    try:
        process.wait_until_ready()
        source = tmp_path / "customers.parquet"
        pq.write_table(pa.Table.from_pandas(credit_frame(300), preserve_index=False), source)
        target = tmp_path / "predictions.parquet"
        url = ["--batch-url", process.url]
        submitted = main(
            ["batch", "submit", str(source), "--model", "columns", "--download", str(target), *url]
        )
        out = capsys.readouterr().out
        assert submitted == 0, out
        assert "100%  succeeded  300 rows (0 rejected)" in out
        assert f"at {target}" in out
        downloaded = pq.read_table(target).to_pandas()
        assert downloaded["id"].tolist() == credit_frame(300)["id"].tolist()
        assert main(["batch", "list", "--json", *url]) == 0
        job = json.loads(capsys.readouterr().out)["jobs"][0]
        batch.written += [
            batch.store.key_from_uri(job["input_uri"]),
            batch.store.key_from_uri(job["output_uri"]),
        ]
        assert main(["batch", "show", job["id"], *url]) == 0
        assert "columns v1 (@production)" in capsys.readouterr().out
        assert main(["batch", "submit", str(source), "--model", "nope", *url]) == 1
        assert "no model version nope @production" in capsys.readouterr().err
    finally:
        process.stop()


async def test_parts_a_finished_job_left_behind_are_swept(batch: Batch) -> None:
    job = await batch.finished(
        (await batch.submit(input_uri=await batch.put_frame("swept.csv", credit_frame(10)), model="columns"))[
            "id"
        ]
    )
    database = batch.app.state.runtime.database
    async with database.acquire() as connection:  # as if a stop had cut the deletion of its 3 parts short
        await connection.execute("UPDATE file_jobs SET chunks_done = 3 WHERE id = $1", job["id"])
    for index in range(3):
        await batch.store.put_bytes(part_key(job["id"], index, "csv"), b"a\n")
    await batch.app.state.file_job_runner.sweep_parts()
    for index in range(4):
        with pytest.raises(ArtifactNotFound):
            await batch.store.stat(part_key(job["id"], index, "csv"))
    async with database.acquire() as connection:
        assert await connection.fetchval("SELECT chunks_done FROM file_jobs WHERE id = $1", job["id"]) == 0
