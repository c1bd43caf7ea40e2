"""The servers under test, each a process group of its own: Flywheel (registry and serving), `mlflow models
serve` (one per model), the hand-built FastAPI app and the bare ASGI app, the last two on uvicorn."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from bench.common.cpu import process_group, stat_fields
from bench.common.processes import ServerProcess, free_port, start_flywheel_service, start_server
from bench.serving.handbuilt_app import MODEL_DIR_VARIABLE, THREADS_VARIABLE
from bench.serving.workload import BenchModel

READY_SECONDS = 120.0


def uvicorn_speedups() -> tuple[list[str], str]:
    """uvicorn's options for uvloop and httptools when both are installed (as Flywheel's services get
    them), and what was chosen, for the report."""
    if importlib.util.find_spec("uvloop") and importlib.util.find_spec("httptools"):
        return ["--loop", "uvloop", "--http", "httptools"], "uvloop + httptools"
    return [], "asyncio + h11 (uvloop or httptools not installed)"


def threads_per_worker(workers: int) -> int:
    """onnxruntime's intra-op threads in each of `workers` processes, as Flywheel's serving divides them:
    the cores shared among the workers, at most 4 each."""
    return max(1, min(4, (os.cpu_count() or 1) // workers))


def start_registry(
    repo_root: Path, infra: dict[str, str], database_url: str, namespace: str, log_dir: Path
) -> ServerProcess:
    settings = {"FLYWHEEL_DATABASE_URL": database_url}
    return start_flywheel_service("registry", repo_root, infra, namespace, log_dir, settings)


def start_serving(
    repo_root: Path, infra: dict[str, str], registry_url: str, namespace: str, workers: int, log_dir: Path
) -> ServerProcess:
    """Serving with its defaults, logging every prediction to Kafka, and `workers` uvicorn workers
    (FLYWHEEL_SERVING_WORKERS; a serving that does not read it yet runs one process)."""
    settings = {"FLYWHEEL_SERVING_REGISTRY_URL": registry_url, "FLYWHEEL_SERVING_WORKERS": str(workers)}
    return start_flywheel_service("serving", repo_root, infra, namespace, log_dir, settings)


def start_uvicorn_app(
    name: str, app: str, repo_root: Path, workers: int, log_dir: Path, env: dict[str, str] | None = None
) -> ServerProcess:
    port = free_port()
    speedups, _ = uvicorn_speedups()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-access-log",
        "--log-level",
        "warning",
        *speedups,
    ]
    log_path = log_dir / f"{app.split(':')[0].rsplit('.', 1)[-1]}.log"
    return start_server(name, command, port, dict(os.environ) | (env or {}), repo_root, log_path)


def start_handbuilt(repo_root: Path, model_dir: Path, workers: int, log_dir: Path) -> ServerProcess:
    env = {MODEL_DIR_VARIABLE: str(model_dir), THREADS_VARIABLE: str(threads_per_worker(workers))}
    return start_uvicorn_app(
        "hand-built app", "bench.serving.handbuilt_app:app", repo_root, workers, log_dir, env
    )


def start_bare_asgi(repo_root: Path, workers: int, log_dir: Path) -> ServerProcess:
    return start_uvicorn_app("bare ASGI app", "bench.serving.bare_asgi:app", repo_root, workers, log_dir)


def save_mlflow_models(mlflow_venv: Path, models: list[BenchModel], directory: Path) -> dict[str, Path]:
    """Each model saved by MLflow's own `mlflow.sklearn.save_model` (in MLflow's virtualenv) from its
    pickle: the model directories by model name."""
    sample = directory / "mlflow-signature-sample.npy"
    np.save(sample, models[0].rows[:5])
    directories = {model.name: directory / f"mlflow-{model.name}" for model in models}
    arguments = [str(path) for model in models for path in (model.pickle_path, directories[model.name])]
    script = Path(__file__).with_name("mlflow_model.py")
    subprocess.run([str(mlflow_venv / "bin" / "python"), str(script), str(sample), *arguments], check=True)
    return directories


def start_mlflow_model(mlflow_venv: Path, model_dir: Path, workers: int, log_dir: Path) -> ServerProcess:
    """`mlflow models serve` on the model directory, in MLflow's virtualenv (--env-manager local)."""
    port = free_port()
    command = [
        str(mlflow_venv / "bin" / "mlflow"),
        "models",
        "serve",
        "-m",
        str(model_dir),
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-w",
        str(workers),
    ]
    # MLflow starts `uvicorn` from PATH: its own virtualenv's, as if activated.
    env = dict(os.environ) | {"PATH": f"{mlflow_venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    return start_server(
        f"MLflow ({model_dir.name})",
        command,
        port,
        env,
        log_dir,
        log_dir / f"{model_dir.name}.log",
    )


def worker_processes(server: ServerProcess) -> int:
    """How many processes serve requests in the server's process group, from /proc: those without
    children of their own (a lone process; or the workers under a supervisor), not counting
    multiprocessing's resource tracker."""
    parents: dict[int, int] = {}
    for pid in process_group(server.process.pid):
        try:
            if b"resource_tracker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
        except OSError:
            continue  # gone meanwhile
        if (fields := stat_fields(Path(f"/proc/{pid}/stat"))) is not None:
            parents[pid] = int(fields[1])
    return len(set(parents) - set(parents.values())) or 1
