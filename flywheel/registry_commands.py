"""The `flywheel` commands that read and change the registry, one function per command.

Each takes the client and its parsed arguments and returns a Report: the server's JSON (what `--json`
prints) and the same as human tables. The argparse wiring is in `flywheel.cli`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from flywheel.client import MAX_PAGE_SIZE, RegistryClient, every_page
from flywheel.errors import InvalidRequestError
from flywheel.reports import Report
from flywheel.service_client import Json
from flywheel.tables import format_cell, format_fields, format_table, format_timestamp

# Audit entries keep whole records; longer values are cut so that a row stays readable.
AUDIT_VALUE_CHARACTERS = 40
SHORT_SHA256 = 12


Command = Callable[[RegistryClient, argparse.Namespace], Report]


# ---------------------------------------------------------------- experiments


def experiments_list(client: RegistryClient, arguments: argparse.Namespace) -> Report:
    """Every experiment, newest first."""
    page = every_page(lambda token: client.list_experiments(MAX_PAGE_SIZE, token), "experiments")
    rows = [
        (e["name"], e["id"], e["description"], e["tags"], format_timestamp(e["created_at"]))
        for e in page["experiments"]
    ]
    return Report(page, format_table(["name", "id", "description", "tags", "created"], rows))


def experiments_show(client: RegistryClient, arguments: argparse.Namespace) -> Report:
    """One experiment by name."""
    experiment = client.get_experiment_by_name(arguments.name)
    fields = [
        ("name", experiment["name"]),
        ("id", experiment["id"]),
        ("description", experiment["description"]),
        ("tags", experiment["tags"]),
        ("created", format_timestamp(experiment["created_at"])),
        ("updated", format_timestamp(experiment["updated_at"])),
    ]
    return Report(experiment, format_fields(fields))


# ---------------------------------------------------------------- runs


def runs_list(client: RegistryClient, arguments: argparse.Namespace) -> Report:
    """Runs matching --filter, in --experiment or every experiment, with a column per metric."""
    experiment_ids = (
        [client.get_experiment_by_name(arguments.experiment)["id"]] if arguments.experiment else []
    )
    page = client.search_runs(
        experiment_ids=experiment_ids,
        filter=arguments.filter,
        order_by=arguments.order_by,
        max_results=arguments.max,
    )
    metric_keys = sorted({key for run in page["runs"] for key in run["metrics"]})
    headers = ["id", "name", "status", "started", *(f"metrics.{key}" for key in metric_keys)]
    rows = [
        (
            run["id"],
            run["name"],
            run["status"],
            format_timestamp(run["start_time"]),
            *(run["metrics"].get(key) for key in metric_keys),
        )
        for run in page["runs"]
    ]
    return Report(page, format_table(headers, rows))


def runs_show(client: RegistryClient, arguments: argparse.Namespace) -> Report:
    """One run: its details, params and last metric values."""
    run = client.get_run(arguments.run_id)
    fields = [
        ("id", run["id"]),
        ("name", run["name"]),
        ("experiment_id", run["experiment_id"]),
        ("status", run["status"]),
        ("started", format_timestamp(run["start_time"])),
        ("ended", format_timestamp(run["end_time"])),
        ("code_version", run["code_version"]),
        ("dataset_fingerprint", run["dataset_fingerprint"]),
        ("tags", run["tags"]),
    ]
    return Report(run, _sections(format_fields(fields), *_params_and_metrics(run)))


def runs_compare(client: RegistryClient, arguments: argparse.Namespace) -> Report:
    """Runs side by side, a column each; params that differ are marked with `*`."""
    comparison = client.compare_runs(arguments.run_ids)
    runs = comparison["runs"]
    differing = set(comparison["differing_params"])
    rows: list[list[object]] = [
        ["id", *(run["id"] for run in runs)],
        ["status", *(run["status"] for run in runs)],
    ]
    for key in comparison["param_keys"]:
        label = f"params.{key}{' *' if key in differing else ''}"
        rows.append([label, *(run["params"].get(key) for run in runs)])
    for key in comparison["metric_keys"]:
        rows.append([f"metrics.{key}", *(run["metrics"].get(key) for run in runs)])
    table = format_table(["", *(run["name"] for run in runs)], rows)
    return Report(comparison, f"{table}\n\n* differs between the runs" if differing else table)


# ---------------------------------------------------------------- models


def models_list(client: RegistryClient, arguments: argparse.Namespace) -> Report:
    """Every registered model with its latest version and aliases."""
    page = every_page(lambda token: client.list_models(MAX_PAGE_SIZE, token), "models")
    rows = [
        (m["name"], m["latest_version"], m["aliases"], m["description"], format_timestamp(m["updated_at"]))
        for m in page["models"]
    ]
    return Report(page, format_table(["name", "latest", "aliases", "description", "updated"], rows))


def models_versions(client: RegistryClient, arguments: argparse.Namespace) -> Report:
    """The model's versions, newest first."""
    name = arguments.name
    page = every_page(lambda token: client.list_versions(name, MAX_PAGE_SIZE, token), "versions")
    rows = [
        (
            v["version"],
            v["status"],
            v["aliases"],
            v["source_run_id"],
            (v["artifact_sha256"] or "")[:SHORT_SHA256] or None,
            v["created_by"],
            format_timestamp(v["created_at"]),
        )
        for v in page["versions"]
    ]
    headers = ["version", "status", "aliases", "source_run", "sha256", "created_by", "created"]
    return Report(page, format_table(headers, rows))


def models_show(client: RegistryClient, arguments: argparse.Namespace) -> Report:
    """The registered model, or one of its versions with --version or --alias."""
    if arguments.version is not None:
        return _version_report(client.get_version(arguments.name, arguments.version))
    if arguments.alias is not None:
        return _version_report(client.get_version_by_alias(arguments.name, arguments.alias))
    model = client.get_model(arguments.name)
    fields = [
        ("name", model["name"]),
        ("description", model["description"]),
        ("latest_version", model["latest_version"]),
        ("aliases", model["aliases"]),
        ("traffic", format_traffic_policy(model["traffic_policy"])),
        ("tags", model["tags"]),
        ("created", format_timestamp(model["created_at"])),
        ("updated", format_timestamp(model["updated_at"])),
    ]
    return Report(model, format_fields(fields))


def models_lineage(client: RegistryClient, arguments: argparse.Namespace) -> Report:
    """From a version to the run that produced it: its params, metrics, data and code."""
    lineage = client.lineage(arguments.name, arguments.version)
    run = lineage["run"]
    fields: list[tuple[str, object]] = [
        ("model", lineage["model_name"]),
        ("version", lineage["version"]),
        ("artifact_uri", lineage["artifact_uri"]),
        ("artifact_sha256", lineage["artifact_sha256"]),
        ("reference_profile_uri", lineage["reference_profile_uri"]),
        ("source_run_id", lineage["source_run_id"]),
    ]
    if run is None:
        return Report(lineage, _sections(format_fields(fields), "no run: none was given, or it was deleted"))
    fields += [
        ("run", run["name"]),
        ("run_status", run["status"]),
        ("experiment", run["experiment_name"]),
        ("started", format_timestamp(run["start_time"])),
        ("ended", format_timestamp(run["end_time"])),
        ("code_version", run["code_version"]),
        ("dataset_fingerprint", run["dataset_fingerprint"]),
        ("tags", run["tags"]),
    ]
    return Report(lineage, _sections(format_fields(fields), *_params_and_metrics(run)))


def models_set_alias(client: RegistryClient, arguments: argparse.Namespace) -> Report:
    """Point an alias at a version, and say which version it pointed at before."""
    move = client.set_alias(arguments.name, arguments.alias, arguments.version)
    rows = [(move["model_name"], move["alias"], move["version"], move["previous_version"])]
    return Report(move, format_table(["model", "alias", "version", "previous_version"], rows))


def models_traffic(client: RegistryClient, arguments: argparse.Namespace) -> Report:
    """Show the model's traffic policy, set it with --split (and --shadow), or remove it with --clear."""
    name = arguments.name
    if arguments.clear:
        client.clear_traffic_policy(name)
        return Report(
            {"model_name": name, "traffic_policy": None}, f"{name}: every request to the default alias"
        )
    if arguments.shadow and not arguments.split:
        raise InvalidRequestError("--shadow goes with --split: give the whole policy", status_code=400)
    if arguments.split:
        policy = client.set_traffic_policy(name, dict(arguments.split), arguments.shadow)
    else:
        policy = client.get_model(name)["traffic_policy"]
    return Report({"model_name": name, "traffic_policy": policy}, f"{name}: {format_traffic_policy(policy)}")


def format_traffic_policy(policy: Json | None) -> str:
    if policy is None:
        return "every request to the default alias"
    split = ", ".join(f"{alias} {weight}%" for alias, weight in policy["split"].items())
    return split + "".join(f"; shadow {alias}" for alias in policy["shadow"])


def alias_share(text: str) -> tuple[str, int]:
    """`canary=10` -> ("canary", 10), for --split."""
    alias, _, weight = text.partition("=")
    if not alias or not weight.isdigit():
        raise argparse.ArgumentTypeError(f"expected ALIAS=PERCENT (e.g. canary=10), got {text!r}")
    return alias, int(weight)


def models_audit(client: RegistryClient, arguments: argparse.Namespace) -> Report:
    """Who changed what in the model, and when, oldest first."""
    name = arguments.name
    page = every_page(lambda token: client.audit(name, MAX_PAGE_SIZE, token), "entries")
    rows = [
        (
            format_timestamp(e["at"]),
            e["actor"],
            e["action"],
            e["version"],
            _change(e["before"], e["after"]),
        )
        for e in page["entries"]
    ]
    return Report(page, format_table(["at", "actor", "action", "version", "change"], rows))


# ---------------------------------------------------------------- tokens


def tokens_create(client: RegistryClient, arguments: argparse.Namespace) -> Report:
    """Issue a token for a user, workspace and role (admins only); its secret is shown this once."""
    token = client.create_token(arguments.user, arguments.workspace, arguments.role)
    fields = [(name, token[name]) for name in ("id", "user", "workspace", "role")]
    text = format_fields([*fields, ("token", token["token"])])
    return Report(token, f"{text}\nthe token is shown this once; send it as FLYWHEEL_TOKEN")


def tokens_list(client: RegistryClient, arguments: argparse.Namespace) -> Report:
    """Every token, without secrets (admins only)."""
    tokens = client.list_tokens()
    rows = [
        (
            t["id"],
            t["user"],
            t["workspace"],
            t["role"],
            format_timestamp(t["created_at"]),
            format_timestamp(t["last_used_at"]),
            format_timestamp(t["revoked_at"]),
        )
        for t in tokens
    ]
    headers = ["id", "user", "workspace", "role", "created", "last used", "revoked"]
    return Report(tokens, format_table(headers, rows))


def tokens_revoke(client: RegistryClient, arguments: argparse.Namespace) -> Report:
    """Revoke a token (admins only)."""
    token = client.revoke_token(arguments.token_id)
    return Report(
        token, f"revoked token {token['id']} ({token['user']}, {token['workspace']}, {token['role']})"
    )


# ---------------------------------------------------------------- shared pieces


def _version_report(version: Json) -> Report:
    fields = [
        ("model", version["model_name"]),
        ("version", version["version"]),
        ("status", version["status"]),
        ("status_message", version["status_message"]),
        ("description", version["description"]),
        ("aliases", version["aliases"]),
        ("tags", version["tags"]),
        ("artifact_uri", version["artifact_uri"]),
        ("artifact_sha256", version["artifact_sha256"]),
        ("artifact_size", version["artifact_size"]),
        ("source_run_id", version["source_run_id"]),
        ("reference_profile_uri", version["reference_profile_uri"]),
        ("created_by", version["created_by"]),
        ("created", format_timestamp(version["created_at"])),
    ]
    signature = version["signature"] or {"inputs": [], "outputs": []}
    tensors = [
        (role, tensor["name"], tensor["datatype"], tensor["shape"])
        for role, key in (("input", "inputs"), ("output", "outputs"))
        for tensor in signature[key]
    ]
    return Report(
        version,
        _sections(format_fields(fields), format_table(["tensor", "name", "datatype", "shape"], tensors)),
    )


def _params_and_metrics(run: Json) -> tuple[str, str]:
    params = format_table(["param", "value"], sorted(run["params"].items()))
    metrics = format_table(["metric", "value"], sorted(run["metrics"].items()))
    return params, metrics


def _change(before: Json | None, after: Json | None) -> str | None:
    """`key: old -> new` for each value the entry changed; None when it changed none."""
    before, after = before or {}, after or {}
    changed = [key for key in dict.fromkeys([*before, *after]) if before.get(key) != after.get(key)]
    return (
        "; ".join(f"{key}: {_short(before.get(key))} -> {_short(after.get(key))}" for key in changed) or None
    )


def _short(value: object) -> str:
    text = format_cell(value)
    return text if len(text) <= AUDIT_VALUE_CHARACTERS else f"{text[: AUDIT_VALUE_CHARACTERS - 3]}..."


def _sections(*parts: str) -> str:
    return "\n\n".join(parts)
