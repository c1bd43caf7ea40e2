"""The `flywheel` command line.

flywheel up            start the five services, each as its own process, and wait until all are ready
flywheel status        say which services answer, and whether their dependencies do
flywheel experiments   list, show
flywheel runs          list (search), show, compare
flywheel models        list, versions, show, lineage, set-alias, audit

The registry commands print tables, or the server's JSON with --json; errors go to stderr as
`flywheel: <message>` with exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from types import FrameType

import httpx

from flywheel import registry_commands as commands
from flywheel.client import RegistryClient
from flywheel.errors import FlywheelError
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

    # Services that call the registry over HTTP find it where this command starts it.
    environment = {"FLYWHEEL_TRAINER_REGISTRY_URL": endpoints(["registry"])[0].url, **os.environ}
    processes = {
        endpoint.name: subprocess.Popen([sys.executable, "-m", f"services.{endpoint.name}"], env=environment)
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


def run_registry_command(command: commands.Command, arguments: argparse.Namespace) -> int:
    """Run one registry command and print its report: 0, or 1 with the error on stderr."""
    try:
        with RegistryClient(arguments.registry_url) as client:
            report = command(client, arguments)
    except FlywheelError as error:
        print(f"flywheel: {error}", file=sys.stderr)
        return 1
    print(json.dumps(report.data, indent=2) if arguments.json else report.text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Every command and its arguments; registry commands carry their function as `command`."""
    parser = argparse.ArgumentParser(prog="flywheel", description="Flywheel: the closed-loop MLOps platform")
    groups = parser.add_subparsers(dest="group", required=True)
    for name, help_text in (
        ("up", "start the services (each its own process) and wait until they are ready"),
        ("status", "show which services answer and whether their dependencies do"),
    ):
        command = groups.add_parser(name, help=help_text)
        command.add_argument(
            "--services", nargs="+", choices=list(SERVICE_SETTINGS), default=list(SERVICE_SETTINGS)
        )

    registry_options = argparse.ArgumentParser(add_help=False)
    registry_options.add_argument("--json", action="store_true", help="print the server's JSON")
    registry_options.add_argument(
        "--registry-url", help="the registry (default: $FLYWHEEL_REGISTRY_URL, else http://127.0.0.1:8081)"
    )

    def add(
        actions: argparse._SubParsersAction[argparse.ArgumentParser], name: str, command: commands.Command
    ) -> argparse.ArgumentParser:
        found = actions.add_parser(name, help=command.__doc__, parents=[registry_options])
        found.set_defaults(command=command)
        return found

    experiment_actions = groups.add_parser("experiments", help="experiments").add_subparsers(
        dest="action", required=True
    )
    add(experiment_actions, "list", commands.experiments_list)
    add(experiment_actions, "show", commands.experiments_show).add_argument("name")

    run_actions = groups.add_parser("runs", help="runs: search, show, compare").add_subparsers(
        dest="action", required=True
    )
    runs_list = add(run_actions, "list", commands.runs_list)
    runs_list.add_argument("--experiment", help="only runs of this experiment (by name)")
    runs_list.add_argument("--filter", default="", help="e.g. \"metrics.auc > 0.8 and params.model = 'rf'\"")
    runs_list.add_argument(
        "--order-by", nargs="+", action="extend", default=[], metavar="CLAUSE", help="e.g. 'metrics.auc DESC'"
    )
    runs_list.add_argument("--max", type=int, default=100, help="at most this many runs (1 to 1000)")
    add(run_actions, "show", commands.runs_show).add_argument("run_id")
    add(run_actions, "compare", commands.runs_compare).add_argument("run_ids", nargs="+", metavar="RUN_ID")

    model_actions = groups.add_parser("models", help="registered models").add_subparsers(
        dest="action", required=True
    )
    add(model_actions, "list", commands.models_list)
    add(model_actions, "versions", commands.models_versions).add_argument("name")
    models_show = add(model_actions, "show", commands.models_show)
    models_show.add_argument("name")
    which = models_show.add_mutually_exclusive_group()
    which.add_argument("--version", type=int, help="show this version")
    which.add_argument("--alias", help="show the version this alias points at")
    models_lineage = add(model_actions, "lineage", commands.models_lineage)
    models_lineage.add_argument("name")
    models_lineage.add_argument("version", type=int)
    models_set_alias = add(model_actions, "set-alias", commands.models_set_alias)
    models_set_alias.add_argument("name")
    models_set_alias.add_argument("alias")
    models_set_alias.add_argument("version", type=int)
    add(model_actions, "audit", commands.models_audit).add_argument("name")
    return parser


def main(argv: list[str] | None = None) -> int:
    """`flywheel ...`: the exit status (0 success, 1 failure, 2 usage error as argparse reports it)."""
    arguments = build_parser().parse_args(argv)
    if arguments.group == "up":
        return command_up(arguments.services)
    if arguments.group == "status":
        return command_status(arguments.services)
    return run_registry_command(arguments.command, arguments)


if __name__ == "__main__":
    sys.exit(main())
