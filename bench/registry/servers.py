"""The two servers under test: Flywheel's registry and an MLflow tracking server."""

from __future__ import annotations

import os
from pathlib import Path

from bench.common.processes import ServerProcess, free_port, start_flywheel_service, start_server

FLYWHEEL_READY_SECONDS = 60.0
# MLflow migrates its schema at first start, which takes a while on a fresh database.
MLFLOW_READY_SECONDS = 180.0


def start_flywheel(
    repo_root: Path, infra_env: dict[str, str], database_url: str, namespace: str, log_dir: Path
) -> ServerProcess:
    # Access control off: the MLflow server it is compared with checks no credentials either.
    settings = {"FLYWHEEL_DATABASE_URL": database_url, "FLYWHEEL_AUTH_ENABLED": "false"}
    return start_flywheel_service("registry", repo_root, infra_env, namespace, log_dir, settings)


def start_mlflow(mlflow_venv: Path, database_url: str, artifact_dir: Path, log_dir: Path) -> ServerProcess:
    port = free_port()
    # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; the requirements install psycopg2.
    backend_store_uri = database_url.replace("postgresql://", "postgresql+psycopg2://", 1)
    command = [
        str(mlflow_venv / "bin" / "mlflow"),
        "server",
        "--backend-store-uri",
        backend_store_uri,
        "--default-artifact-root",
        artifact_dir.as_uri(),
        "--no-serve-artifacts",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--allowed-hosts",
        f"127.0.0.1:{port},localhost:{port}",
    ]
    return start_server(
        "MLflow server", command, port, dict(os.environ), artifact_dir, log_dir / "mlflow.log"
    )
