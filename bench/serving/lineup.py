"""The servers under test, started side by side, with where each one answers each model. Everything it
starts or creates is handed to the caller's ExitStack, which stops and deletes it again."""

from __future__ import annotations

import secrets
from contextlib import ExitStack
from pathlib import Path

import httpx

from bench.common.databases import BenchDatabases
from bench.common.infrastructure import delete_kafka_topics
from bench.common.processes import ServerProcess
from bench.serving.flywheel import delete_artifacts, register_models
from bench.serving.measure import Endpoint
from bench.serving.servers import (
    READY_SECONDS,
    save_mlflow_models,
    start_bare_asgi,
    start_handbuilt,
    start_mlflow_model,
    start_registry,
    start_serving,
)
from bench.serving.workload import BenchModel

HEALTH_PATHS = {"mlflow": "/ping", "handbuilt": "/health", "flywheel": "/health/ready", "bare": "/"}
# Request bodies by format, then rows per request.
Bodies = dict[str, dict[int, Path]]


class Lineup:
    def __init__(
        self,
        repo_root: Path,
        infra: dict[str, str],
        mlflow_venv: Path,
        workers: int,
        work_dir: Path,
        cleanup: ExitStack,
    ) -> None:
        self.repo_root = repo_root
        self.infra = infra
        self.mlflow_venv = mlflow_venv
        self.workers = workers
        self.work_dir = work_dir
        self.cleanup = cleanup
        self.namespace = f"bench-{secrets.token_hex(4)}"
        self.processes: dict[str, list[ServerProcess]] = {}
        self.endpoints: dict[tuple[str, str], Endpoint] = {}

    def start(self, server: str, models: list[BenchModel], bodies: Bodies) -> None:
        """Start `server` (flywheel, handbuilt, bare or mlflow) for `models`, without waiting for it."""
        if server == "flywheel":
            self._start_flywheel(models, bodies)
        elif server == "handbuilt":
            handbuilt = self._started(
                start_handbuilt(self.repo_root, models[0].onnx_path.parent, self.workers, self.work_dir)
            )
            self._add(server, handbuilt, models, "/v1/models/{name}:predict", bodies["instances"])
        elif server == "bare":
            bare = self._started(start_bare_asgi(self.repo_root, self.workers, self.work_dir))
            self._add(server, bare, models, "/v1/models/{name}:predict", bodies["instances"])
        elif server == "mlflow":
            print("saving the models with mlflow.sklearn.save_model", flush=True)
            directories = save_mlflow_models(self.mlflow_venv, models, self.work_dir)
            for model in models:  # `mlflow models serve` serves one model
                process = start_mlflow_model(
                    self.mlflow_venv, directories[model.name], self.workers, self.work_dir
                )
                self._add(server, self._started(process), [model], "/invocations", bodies["inputs"])
        else:
            raise ValueError(f"no server {server!r}")

    def wait_until_ready(self, models: list[BenchModel]) -> None:
        print("waiting for the servers", flush=True)
        for server, started in self.processes.items():
            for process in started:
                process.wait_until_healthy(HEALTH_PATHS[server], READY_SECONDS)
        if "flywheel" in self.processes:
            serving = self.processes["flywheel"][0]
            for model in models:  # loads it in the worker that answers; the warm-ups load it in the others
                httpx.get(f"{serving.base_url}/v2/models/{model.name}/ready", timeout=60.0).raise_for_status()

    def _start_flywheel(self, models: list[BenchModel], bodies: Bodies) -> None:
        """The registry on a fresh database, the models uploaded to it, and serving reading from it; all
        in the Kafka namespace, whose topics are deleted at the end."""
        suffix = self.namespace.removeprefix("bench-")
        databases = BenchDatabases(self.infra["FLYWHEEL_DATABASE_URL"], suffix, ("flywheel",))
        print(f"creating database {databases.name('flywheel')}; Kafka namespace {self.namespace}", flush=True)
        databases.create()
        self.cleanup.callback(databases.drop)
        self.cleanup.callback(delete_kafka_topics, self.infra["FLYWHEEL_KAFKA_BOOTSTRAP"], self.namespace)
        registry = self._started(
            start_registry(
                self.repo_root, self.infra, databases.url("flywheel"), self.namespace, self.work_dir
            )
        )
        registry.wait_until_healthy("/health/ready", READY_SECONDS)
        uris = register_models(registry.base_url, models)
        self.cleanup.callback(delete_artifacts, self.infra, uris)
        serving = start_serving(
            self.repo_root, self.infra, registry.base_url, self.namespace, self.workers, self.work_dir
        )
        self._add(
            "flywheel", self._started(serving), models, "/v1/models/{name}:predict", bodies["instances"]
        )

    def _started(self, process: ServerProcess) -> ServerProcess:
        self.cleanup.callback(process.stop)
        return process

    def _add(
        self,
        server: str,
        process: ServerProcess,
        models: list[BenchModel],
        path: str,
        bodies: dict[int, Path],
    ) -> None:
        self.processes.setdefault(server, []).append(process)
        for model in models:
            url = process.base_url + path.format(name=model.name)
            group = process.process.pid  # started in a session of its own
            self.endpoints[server, model.name] = Endpoint(server, model.name, url, bodies, group)
