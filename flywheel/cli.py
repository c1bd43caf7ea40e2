"""The `flywheel` command line.

flywheel up            start the five services: on the servers FLYWHEEL_KAFKA_BOOTSTRAP, FLYWHEEL_DATABASE_URL
                       and FLYWHEEL_S3_ENDPOINT name, each as its own process; with none of them set, all
                       in this process on an embedded PostgreSQL, files and an in-memory bus
flywheel status        say which services answer, and whether their dependencies do
flywheel demo          the closed loop on synthetic credit-risk data, told step by step
flywheel experiments   list, show
flywheel runs          list (search), show, compare
flywheel models        list, versions, show, lineage, set-alias, traffic, audit
flywheel datasets      upload
flywheel jobs          submit, follow, list, show
flywheel retrain       retrain a model with the configuration behind its production version
flywheel batch         submit, follow, download, list, show: files scored by the batch service
flywheel tokens        create, list, revoke: API tokens (admins)
flywheel alerts        tail the monitor's alerts; webhooks: subscribe, subscriptions, deliveries, test,
                       unsubscribe

The registry, trainer, batch and alerts commands print tables, or the server's JSON with --json; errors
go to stderr as `flywheel: <message>` with exit status 1.
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

from flywheel import alert_commands, batch_commands, demo, trainer_commands
from flywheel import registry_commands as commands
from flywheel.admin_token import announce_admin_token, local_admin_token
from flywheel.batch_client import BATCH, BatchClient
from flywheel.client import REGISTRY, RegistryClient
from flywheel.errors import FlywheelError
from flywheel.monitor_client import MONITOR, MonitorClient
from flywheel.service_client import readiness
from flywheel.trainer_client import TRAINER, TrainerClient
from services.batch.settings import BatchSettings
from services.monitor.settings import MonitorSettings
from services.registry.settings import RegistrySettings
from services.serving.settings import ServingSettings
from services.trainer.settings import TrainerSettings
from shared.auth import Role, new_token
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
    return [ServiceEndpoint(name, SERVICE_SETTINGS[name]().url) for name in names]


def command_status(names: list[str]) -> int:
    all_ready = True
    for endpoint in endpoints(names):
        ready, shown = readiness(endpoint.url)
        all_ready &= ready
        print(f"{endpoint.name:<9} {endpoint.url:<24} {shown}")
    return 0 if all_ready else 1


def command_up(names: list[str]) -> int:
    """With none of the three servers configured, the embedded platform in this process; with all three,
    each service as its own process on them."""
    configured = FlywheelSettings().configured_servers()
    if not any(configured.values()):
        if names != list(SERVICE_SETTINGS):
            print("flywheel up: the embedded mode runs all five services; name none", file=sys.stderr)
            return 2
        from flywheel.embedded import (
            run_embedded,
        )  # imported here: it loads every service, only `up` needs it

        return run_embedded()
    if not all(configured.values()):
        missing = ", ".join(variable for variable, is_set in configured.items() if not is_set)
        print(
            f"flywheel up: {missing} not set: set all three server settings to run on servers "
            f"({START_SERVERS_HINT}), or none for the embedded mode",
            file=sys.stderr,
        )
        return 2

    # Services that call the registry over HTTP find it where this command starts it.
    registry_url = endpoints(["registry"])[0].url
    settings = FlywheelSettings()
    new_admin_token = None
    tokens = {}
    if settings.auth_enabled:
        admin_token, created = local_admin_token(settings)
        new_admin_token = admin_token if created else None
        tokens["FLYWHEEL_ADMIN_TOKEN"] = admin_token
    environment = {
        "FLYWHEEL_TRAINER_REGISTRY_URL": registry_url,
        "FLYWHEEL_SERVING_REGISTRY_URL": registry_url,
        "FLYWHEEL_BATCH_REGISTRY_URL": registry_url,
        "FLYWHEEL_MONITOR_REGISTRY_URL": registry_url,
        # The services call each other with one token; without a configured one, one made for this start.
        "FLYWHEEL_SERVICE_TOKEN": new_token(),
        **os.environ,
        **tokens,
    }
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
                if readiness(endpoint.url)[0]:
                    pending.remove(endpoint)
            if time.monotonic() > deadline:
                print(
                    f"flywheel up: not ready after {READY_TIMEOUT_SECONDS:.0f}s: {pending}", file=sys.stderr
                )
                return 1
            time.sleep(0.3)
        print("Flywheel is up:")
        command_status(names)
        if new_admin_token is not None:
            announce_admin_token(settings, new_admin_token)
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


def open_client(
    arguments: argparse.Namespace,
) -> RegistryClient | TrainerClient | BatchClient | MonitorClient:
    """The client of the service the command talks to (its `service` default), at the URL given."""
    if arguments.service == "monitor":
        return MonitorClient(arguments.monitor_url)
    if arguments.service == "trainer":
        return TrainerClient(arguments.trainer_url)
    if arguments.service == "batch":
        return BatchClient(arguments.batch_url)
    return RegistryClient(arguments.registry_url)


def run_command(arguments: argparse.Namespace) -> int:
    """Run one registry, trainer or batch command and print its report: the report's exit status, or 1
    with the error on stderr."""
    try:
        with open_client(arguments) as client:
            report = arguments.command(client, arguments)
    except FlywheelError as error:
        print(f"flywheel: {error}", file=sys.stderr)
        return 1
    print(json.dumps(report.data, indent=2) if arguments.json else report.text)
    return int(report.exit_status)


def add_command(
    actions: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    command: commands.Command
    | trainer_commands.TrainerCommand
    | batch_commands.BatchCommand
    | alert_commands.AlertCommand,
    options: argparse.ArgumentParser,
) -> argparse.ArgumentParser:
    """A subcommand running `command`, with the service's common `options` (--json, the URL)."""
    found = actions.add_parser(name, help=command.__doc__, parents=[options])
    found.set_defaults(command=command)
    return found


def build_parser() -> argparse.ArgumentParser:
    """Every command and its arguments; registry and trainer commands carry their function as `command`
    and the service they talk to as `service`."""
    parser = argparse.ArgumentParser(prog="flywheel", description="Flywheel: the closed-loop MLOps platform")
    groups = parser.add_subparsers(dest="group", required=True)
    for name, help_text in (
        (
            "up",
            "start the services and wait until they are ready: each its own process on the configured "
            "servers, or all five embedded in this process when none is configured",
        ),
        ("status", "show which services answer and whether their dependencies do"),
    ):
        command = groups.add_parser(name, help=help_text)
        command.add_argument(
            "--services", nargs="+", choices=list(SERVICE_SETTINGS), default=list(SERVICE_SETTINGS)
        )

    registry_options = argparse.ArgumentParser(add_help=False)
    registry_options.add_argument("--json", action="store_true", help="print the server's JSON")
    REGISTRY.add_option(registry_options)
    registry_options.set_defaults(service="registry")

    def add(
        actions: argparse._SubParsersAction[argparse.ArgumentParser], name: str, command: commands.Command
    ) -> argparse.ArgumentParser:
        return add_command(actions, name, command, registry_options)

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
    models_traffic = add(model_actions, "traffic", commands.models_traffic)
    models_traffic.add_argument("name")
    change = models_traffic.add_mutually_exclusive_group()
    change.add_argument(
        "--split",
        nargs="+",
        type=commands.alias_share,
        metavar="ALIAS=PERCENT",
        help="share requests between aliases, e.g. production=90 canary=10 (percentages summing to 100)",
    )
    change.add_argument("--clear", action="store_true", help="every request to serving's default alias")
    models_traffic.add_argument(
        "--shadow", nargs="+", default=[], metavar="ALIAS", help="mirror every request to these aliases too"
    )
    add(model_actions, "audit", commands.models_audit).add_argument("name")
    token_actions = groups.add_parser("tokens", help="API tokens (admins)").add_subparsers(
        dest="action", required=True
    )
    tokens_create = add(token_actions, "create", commands.tokens_create)
    tokens_create.add_argument("--user", required=True)
    tokens_create.add_argument("--workspace", default="default")
    tokens_create.add_argument("--role", required=True, choices=[role.value for role in Role])
    add(token_actions, "list", commands.tokens_list)
    add(token_actions, "revoke", commands.tokens_revoke).add_argument("token_id")
    add_trainer_commands(groups)
    add_batch_commands(groups)
    add_demo_command(groups)
    add_alert_commands(groups)
    return parser


def add_trainer_commands(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`flywheel datasets`, `flywheel jobs` and `flywheel retrain`."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--json", action="store_true", help="print the server's JSON")
    TRAINER.add_option(options)
    options.set_defaults(service="trainer")
    follow_help = "show the job's progress until it ends, then its outcome; exit 1 when it failed"

    dataset_actions = groups.add_parser("datasets", help="training data").add_subparsers(
        dest="action", required=True
    )
    add_command(dataset_actions, "upload", trainer_commands.datasets_upload, options).add_argument(
        "file", help="a CSV (.csv, .csv.gz) or Parquet (.parquet, .pq) file"
    )

    job_actions = groups.add_parser("jobs", help="training jobs").add_subparsers(dest="action", required=True)
    submit = add_command(job_actions, "submit", trainer_commands.jobs_submit, options)
    submit.add_argument("--model", required=True, help="the registered model the new version belongs to")
    submit.add_argument(
        "--dataset", required=True, metavar="URI_OR_FILE", help="a dataset URI, or a local file to upload"
    )
    submit.add_argument("--target", required=True, help="the column to predict")
    submit.add_argument("--task", required=True, choices=["classification", "regression"])
    submit.add_argument(
        "--estimator", required=True, help="e.g. logistic_regression, random_forest_classifier"
    )
    submit.add_argument(
        "--param",
        dest="params",
        action="append",
        type=trainer_commands.parse_param,
        metavar="KEY=VALUE",
        help="a hyperparameter; VALUE is read as JSON when it parses (100 is a number), else as text",
    )
    submit.add_argument(
        "--metric", metavar="M", help="what evaluation and promotion compare (default: the task's)"
    )
    submit.add_argument("--seed", type=int, metavar="N", help="seeds the split and the estimator (default 0)")
    submit.add_argument(
        "--holdout", type=float, metavar="F", help="share of rows held out for evaluation (default 0.2)"
    )
    submit.add_argument("--experiment", help="the registry experiment (default: the model name)")
    submit.add_argument("--promote-to", metavar="ALIAS", help="move this alias to the new version if it wins")
    submit.add_argument(
        "--min-improvement", type=float, metavar="X", help="by how much it must beat the champion"
    )
    submit.add_argument("--champion-alias", metavar="A", help="the version to beat (default: production)")
    submit.add_argument("--follow", action="store_true", help=follow_help)
    add_command(job_actions, "follow", trainer_commands.jobs_follow, options).add_argument("job_id")
    jobs_list = add_command(job_actions, "list", trainer_commands.jobs_list, options)
    jobs_list.add_argument("--model", help="only this model's jobs")
    jobs_list.add_argument("--max", type=int, default=100, help="at most this many jobs (1 to 1000)")
    add_command(job_actions, "show", trainer_commands.jobs_show, options).add_argument("job_id")

    retrain = add_command(groups, "retrain", trainer_commands.retrain, options)
    retrain.add_argument("model")
    retrain.add_argument("--reason", default="manual", help="recorded on the job and its run")
    retrain.add_argument("--dataset", metavar="URI_OR_FILE", help="newer data (default: the data it had)")
    retrain.add_argument("--follow", action="store_true", help=follow_help)


def add_batch_commands(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`flywheel batch`: file jobs of the batch service."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--json", action="store_true", help="print the server's JSON")
    BATCH.add_option(options)
    options.set_defaults(service="batch")

    actions = groups.add_parser("batch", help="score CSV and Parquet files").add_subparsers(
        dest="action", required=True
    )
    submit = add_command(actions, "submit", batch_commands.batch_submit, options)
    submit.add_argument("source", metavar="FILE_OR_URI", help="a local .csv/.parquet file, or an object URI")
    submit.add_argument("--model", required=True, help="the registered model that scores it")
    which = submit.add_mutually_exclusive_group()
    which.add_argument("--alias", help="score with the version this alias names (default: production)")
    which.add_argument("--version", type=int, help="score with this version")
    submit.add_argument(
        "--features",
        nargs="+",
        metavar="COLUMN",
        help="for a model with a single input: its columns, in order (default: the first numeric ones)",
    )
    submit.add_argument(
        "--output", metavar="URI", help="where the predictions go (default: next to the input)"
    )
    submit.add_argument(
        "--follow", action="store_true", help="show the job's progress until it ends; exit 1 when it failed"
    )
    submit.add_argument(
        "--download", metavar="PATH", help="wait for the job, then save its predictions at PATH"
    )
    add_command(actions, "follow", batch_commands.batch_follow, options).add_argument("job_id")
    download = add_command(actions, "download", batch_commands.batch_download, options)
    download.add_argument("job_id")
    download.add_argument("path", help="where to save the predictions file")
    batch_list = add_command(actions, "list", batch_commands.batch_list, options)
    batch_list.add_argument("--model", help="only this model's jobs")
    batch_list.add_argument("--status", choices=["queued", "running", "succeeded", "failed"])
    batch_list.add_argument("--max", type=int, default=100, help="at most this many jobs (1 to 1000)")
    add_command(actions, "show", batch_commands.batch_show, options).add_argument("job_id")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def add_demo_command(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`flywheel demo`: the closed loop against a running platform."""
    found = groups.add_parser(
        "demo",
        help="train v1, serve it, shift the inputs, watch drift retrain, gate and promote v2; "
        "each step printed as it happens",
    )
    found.add_argument("--model", help="the model's name (default: a fresh credit-risk-demo-<time>)")
    found.add_argument(
        "--predictions",
        type=positive_int,
        default=demo.DEFAULT_PREDICTIONS,
        metavar="N",
        help=f"clean predictions served by v1 before the shift (default {demo.DEFAULT_PREDICTIONS}; "
        f"the monitor judges a window every {demo.WINDOW_ROWS})",
    )
    found.add_argument(
        "--timeout",
        type=float,
        default=demo.DEFAULT_TIMEOUT,
        metavar="S",
        help=f"how long each step may take before the demo fails (default {demo.DEFAULT_TIMEOUT:.0f})",
    )
    for address in (REGISTRY, TRAINER, demo.SERVING, MONITOR):
        address.add_option(found)


def command_demo(arguments: argparse.Namespace) -> int:
    urls = demo.DemoUrls(
        registry=REGISTRY.url(arguments.registry_url),
        trainer=TRAINER.url(arguments.trainer_url),
        serving=demo.SERVING.url(arguments.serving_url),
        monitor=MONITOR.url(arguments.monitor_url),
    )
    options = demo.DemoOptions(
        model=arguments.model or demo.default_model_name(),
        predictions=arguments.predictions,
        timeout=arguments.timeout,
    )
    # With servers configured, a platform that does not answer is theirs to start; with none, the demo can
    # start the embedded one itself.
    servers_configured = any(FlywheelSettings().configured_servers().values())
    return demo.run_demo(urls, options, may_start_embedded=not servers_configured)


def add_alert_commands(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`flywheel alerts`: the monitor's alert stream and webhook subscriptions."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--json", action="store_true", help="print the server's JSON")
    MONITOR.add_option(options)
    options.set_defaults(service="monitor")
    types_help = "the topics followed (default: drift-detected)"

    actions = groups.add_parser(
        "alerts", help="drift alerts and model events: tail, webhooks"
    ).add_subparsers(dest="action", required=True)
    tail = actions.add_parser(
        "tail",
        help="print alerts as they happen, one line each (--json: one CloudEvent each)",
        parents=[options],
    )
    tail.add_argument("--model", help="only this model's")
    tail.add_argument(
        "--types", nargs="+", choices=alert_commands.ALERT_TOPICS, metavar="TOPIC", help=types_help
    )
    tail.add_argument(
        "--severity", choices=alert_commands.SEVERITIES, help="drift alerts at least this severe"
    )
    tail.add_argument("--count", type=int, metavar="N", help="exit after N alerts")
    subscribe = add_command(actions, "subscribe", alert_commands.alerts_subscribe, options)
    subscribe.add_argument("url", help="the webhook: an http(s) URL the monitor POSTs each event to")
    subscribe.add_argument(
        "--secret", help="signs every delivery (at least 16 characters; default: generated)"
    )
    subscribe.add_argument("--model", help="only this model's events (default: every model's)")
    subscribe.add_argument(
        "--severity",
        choices=alert_commands.SEVERITIES,
        help="drift alerts at least this severe (default: all)",
    )
    subscribe.add_argument(
        "--types", nargs="+", choices=alert_commands.ALERT_TOPICS, metavar="TOPIC", help=types_help
    )
    subscribe.add_argument("--description", help="what the webhook is for")
    subscriptions = add_command(actions, "subscriptions", alert_commands.alerts_subscriptions, options)
    subscriptions.add_argument("--max", type=int, default=100, help="at most this many (1 to 1000)")
    deliveries = add_command(actions, "deliveries", alert_commands.alerts_deliveries, options)
    deliveries.add_argument("subscription_id")
    deliveries.add_argument("--status", choices=["pending", "delivered", "failed"])
    deliveries.add_argument("--max", type=int, default=100, help="at most this many (1 to 1000)")
    add_command(actions, "test", alert_commands.alerts_test, options).add_argument("subscription_id")
    add_command(actions, "unsubscribe", alert_commands.alerts_unsubscribe, options).add_argument(
        "subscription_id"
    )


def main(argv: list[str] | None = None) -> int:
    """`flywheel ...`: the exit status (0 success, 1 failure, 2 usage error as argparse reports it)."""
    arguments = build_parser().parse_args(argv)
    if arguments.group == "up":
        return command_up(arguments.services)
    if arguments.group == "status":
        return command_status(arguments.services)
    if arguments.group == "demo":
        return command_demo(arguments)
    if arguments.group == "alerts" and arguments.action == "tail":
        return alert_commands.tail(arguments)
    return run_command(arguments)


if __name__ == "__main__":
    sys.exit(main())
