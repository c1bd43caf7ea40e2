"""The `flywheel` command line.

flywheel up        start the five services, each as its own process, and wait until all are ready
flywheel status    say which services answer, and whether their dependencies do
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from types import FrameType

import httpx

from services.batch.settings import BatchSettings
from services.monitor.settings import MonitorSettings
from services.registry.settings import RegistrySettings
from services.serving.settings import ServingSettings
from services.trainer.settings import TrainerSettings
from shared.service import ServiceSettings
from shared.settings import FlywheelSettings

SERVICE_SETTINGS: dict[str, type[ServiceSettings]] = {
    "registry": RegistrySettings,
    "trainer": TrainerSettings,
    "serving": ServingSettings,
    "batch": BatchSettings,
    "monitor": MonitorSettings,
}
READY_TIMEOUT_SECONDS = 90.0
START_SERVERS_HINT = (
    'start Kafka, MinIO and PostgreSQL with `bash deploy/local/infra.sh up`, then `eval "$(bash '
    'deploy/local/infra.sh env)"` (or point FLYWHEEL_KAFKA_BOOTSTRAP, FLYWHEEL_DATABASE_URL and '
    "FLYWHEEL_S3_ENDPOINT at your own servers)"
)


@dataclass(frozen=True)
class ServiceEndpoint:
    name: str
    url: str


def endpoints(names: list[str]) -> list[ServiceEndpoint]:
    found = []
    for name in names:
        settings = SERVICE_SETTINGS[name]()
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
        found.append(ServiceEndpoint(name, f"http://{host}:{settings.port}"))
    return found


def readiness(endpoint: ServiceEndpoint) -> tuple[bool, str]:
    """(ready, what to show): the service's own readiness answer, or why there is none."""
    try:
        response = httpx.get(f"{endpoint.url}/health/ready", timeout=2)
    except httpx.TransportError:
        return False, "not answering"
    checks = response.json().get("checks", {})
    failing = [name for name, ok in checks.items() if not ok]
    return response.status_code == 200, "ready" if not failing else f"not ready: {', '.join(failing)} down"


def command_status(names: list[str]) -> int:
    all_ready = True
    for endpoint in endpoints(names):
        ready, shown = readiness(endpoint)
        all_ready &= ready
        print(f"{endpoint.name:<9} {endpoint.url:<24} {shown}")
    return 0 if all_ready else 1


def command_up(names: list[str]) -> int:
    infrastructure = FlywheelSettings()
    missing = [
        variable
        for variable, value in (
            ("FLYWHEEL_KAFKA_BOOTSTRAP", infrastructure.kafka_bootstrap),
            ("FLYWHEEL_DATABASE_URL", infrastructure.database_url),
            ("FLYWHEEL_S3_ENDPOINT", infrastructure.s3_endpoint),
        )
        if not value
    ]
    if missing:
        print(f"flywheel up: {', '.join(missing)} not set; {START_SERVERS_HINT}", file=sys.stderr)
        return 2

    processes = {
        endpoint.name: subprocess.Popen(
            [sys.executable, "-m", f"services.{endpoint.name}"], env=os.environ.copy()
        )
        for endpoint in endpoints(names)
    }

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        pending = endpoints(names)
        while pending:
            for endpoint in list(pending):
                if processes[endpoint.name].poll() is not None:
                    print(f"flywheel up: {endpoint.name} exited; see its log above", file=sys.stderr)
                    return 1
                if readiness(endpoint)[0]:
                    pending.remove(endpoint)
            if time.monotonic() > deadline:
                print(
                    f"flywheel up: not ready after {READY_TIMEOUT_SECONDS:.0f}s: {pending}", file=sys.stderr
                )
                return 1
            time.sleep(0.3)
        print("Flywheel is up:")
        command_status(names)
        print("Stop with Ctrl-C.")
        while all(process.poll() is None for process in processes.values()):
            time.sleep(1)
        print("flywheel up: a service exited; stopping the others", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            process.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flywheel", description="Flywheel: the closed-loop MLOps platform")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("up", "start the services (each its own process) and wait until they are ready"),
        ("status", "show which services answer and whether their dependencies do"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument(
            "--services", nargs="+", choices=list(SERVICE_SETTINGS), default=list(SERVICE_SETTINGS)
        )
    arguments = parser.parse_args(argv)
    if arguments.command == "up":
        return command_up(arguments.services)
    return command_status(arguments.services)


if __name__ == "__main__":
    sys.exit(main())
