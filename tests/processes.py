"""Services as real processes (`python -m services.<name>`), for tests that start, kill and restart them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVICES = ["registry", "trainer", "serving", "batch", "monitor"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_flywheel_up(
    environment: dict[str, str], log: Path, timeout: float = 120
) -> subprocess.Popen[bytes]:
    """`flywheel up` as a process logging to `log`, once it has said it is up (ready) and how to stop it."""
    with log.open("wb") as log_file:
        up = subprocess.Popen(
            [sys.executable, "-m", "flywheel", "up"],
            cwd=REPO_ROOT,
            env=environment,
            stdout=log_file,
            stderr=log_file,
        )
    deadline = time.monotonic() + timeout
    while b"Stop with Ctrl-C." not in log.read_bytes():
        if up.poll() is not None or time.monotonic() > deadline:
            up.kill()
            up.wait()
            pytest.fail(f"flywheel up not ready in {timeout:.0f} s: {log.read_text()[-3000:]}")
        time.sleep(0.3)
    return up


class ServiceProcess:
    """One service process on a free port, logging to `log`; environment = ours + `environment`."""

    def __init__(self, service: str, environment: dict[str, str], log: Path) -> None:
        self.service = service
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.environment = {**os.environ, **environment, f"FLYWHEEL_{service.upper()}_PORT": str(self.port)}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        with self.log.open("ab") as log_file:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                [sys.executable, "-m", f"services.{self.service}"],
                cwd=REPO_ROOT,
                env=self.environment,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
                start_new_session=True,  # its worker processes with it, for `kill`
            )
        return self

    def wait_until_ready(self, timeout: float = 60) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"{self.service} exited with {self.process.returncode}: {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        pytest.fail(f"{self.service} was not ready within {timeout}s: {self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL to the service and its worker processes: no shutdown hooks run, as in a crash of its
        machine or container (killing uvicorn's supervisor alone would leave its workers serving)."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM and wait; fails the test when the service does not stop in time."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            pytest.fail(f"{self.service} did not stop within {timeout}s of SIGTERM: {self.log_tail()}")

    def log_tail(self) -> str:
        return self.log.read_text()[-3000:] if self.log.exists() else ""


@dataclass
class Platform:
    """The five services as processes, each with its own log: one registry, trainer, monitor and batch,
    and one or more serving replicas."""

    registry: ServiceProcess
    trainer: ServiceProcess
    monitor: ServiceProcess
    batch: ServiceProcess
    servings: list[ServiceProcess]
    namespace: str = ""  # its Kafka namespace, when it has one of its own

    @property
    def processes(self) -> list[ServiceProcess]:
        return [self.registry, self.trainer, self.monitor, self.batch, *self.servings]

    def log_tails(self) -> str:
        return "\n".join(
            f"--- {process.service} ({process.log.name}) ---\n{process.log_tail()}"
            for process in self.processes
        )

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()


def start_platform(environment: dict[str, str], log_dir: Path, servings: int = 1) -> Platform:
    """Start the registry, then the other services pointed at it, and wait until every one is ready.
    `environment` says where the servers are (and the database and namespace of this platform alone).
    When one does not start, the others are stopped and the test fails with their logs."""
    registry = ServiceProcess("registry", environment, log_dir / "registry.log").start()
    joined = {
        **environment,
        **{
            f"FLYWHEEL_{name.upper()}_REGISTRY_URL": registry.url
            for name in ["trainer", "serving", "batch", "monitor"]
        },
    }
    platform = Platform(
        registry,
        ServiceProcess("trainer", joined, log_dir / "trainer.log"),
        ServiceProcess("monitor", joined, log_dir / "monitor.log"),
        ServiceProcess("batch", joined, log_dir / "batch.log"),
        [
            ServiceProcess("serving", joined, log_dir / f"serving-{index + 1}.log")
            for index in range(servings)
        ],
    )
    try:
        registry.wait_until_ready()
        others = platform.processes[1:]
        for process in others:
            process.start()
        with ThreadPoolExecutor(len(others)) as pool:
            for waited in [pool.submit(process.wait_until_ready, 90) for process in others]:
                waited.result()
    except BaseException:
        print(platform.log_tails())
        platform.stop()
        raise
    return platform
