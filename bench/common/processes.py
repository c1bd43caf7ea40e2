"""Servers under test as child processes: started in a process group of their own, waited for, and
always stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

STOP_GRACE_SECONDS = 10.0


class ServerDidNotStart(RuntimeError):
    """A server exited, or did not answer its health check in time; the message holds its log's tail."""


@dataclass
class ServerProcess:
    name: str
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def wait_until_healthy(self, health_path: str, timeout_seconds: float) -> None:
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerDidNotStart(
                    f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                if httpx.get(self.base_url + health_path, timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass  # not listening yet
            time.sleep(0.5)
        raise ServerDidNotStart(
            f"{self.name} did not answer {health_path} within {timeout_seconds:.0f}s:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """SIGTERM to the server's process group (uvicorn forks its workers), SIGKILL if it lingers."""
        if self.process.poll() is not None:
            return
        _signal_group(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            _signal_group(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_server(
    name: str, command: list[str], port: int, env: dict[str, str], cwd: Path, log_path: Path
) -> ServerProcess:
    """Start `command` in a process group of its own, so that Ctrl-C reaches only the benchmark, which
    then stops the server itself."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    return ServerProcess(name, f"http://127.0.0.1:{port}", process, log_path)


def start_flywheel_service(
    service: str,
    repo_root: Path,
    infra_env: dict[str, str],
    namespace: str,
    log_dir: Path,
    settings: dict[str, str] | None = None,
) -> ServerProcess:
    """`python -m services.<service>` on a free port, on the platform's servers in `infra_env`, with its
    own Kafka namespace, logging warnings only; `settings` adds or overrides FLYWHEEL_* variables."""
    port = free_port()
    env = (
        os.environ
        | infra_env
        | {
            f"FLYWHEEL_{service.upper()}_PORT": str(port),
            "FLYWHEEL_KAFKA_NAMESPACE": namespace,
            "FLYWHEEL_LOG_LEVEL": "WARNING",
            # The apps Flywheel is compared with check no credentials; bench/serving/token_check.py
            # measures what a token check adds.
            "FLYWHEEL_AUTH_ENABLED": "false",
        }
        | (settings or {})
    )
    command = [sys.executable, "-m", f"services.{service}"]
    return start_server(f"Flywheel {service}", command, port, env, repo_root, log_dir / f"{service}.log")


def _signal_group(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(pid, signum)
