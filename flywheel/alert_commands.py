"""The `flywheel alerts` commands: tail the monitor's alert stream, and manage webhook subscriptions and
their delivery log; one function per command.

Each takes the client and its parsed arguments and returns a Report, like the other services' commands,
except `tail`, which prints one line per alert as it comes (one CloudEvent JSON per line with --json)
until stopped. The argparse wiring is in `flywheel.cli`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any, TextIO

from flywheel.errors import FlywheelError
from flywheel.monitor_client import MonitorClient, ServerSentEvent
from flywheel.reports import Report
from flywheel.service_client import Json
from flywheel.tables import format_cell, format_fields, format_table, format_timestamp

AlertCommand = Callable[[MonitorClient, argparse.Namespace], Report]

ALERT_TOPICS = ["drift-detected", "retrain-requested", "model-registered", "model-promoted"]
SEVERITIES = ["info", "warning", "critical"]
INTERRUPTED_EXIT_STATUS = 130  # what a shell reports for a command stopped with Ctrl-C
DRIFTED_FEATURES_SHOWN = 3


# ---------------------------------------------------------------- the alert stream


def tail(arguments: argparse.Namespace, out: TextIO | None = None) -> int:
    """`flywheel alerts tail`: print alerts as they happen (to `out`, default stdout) until Ctrl-C, or
    until --count of them; the exit status."""
    out = out or sys.stdout
    try:
        with MonitorClient(arguments.monitor_url) as client:
            events = client.follow_alerts(arguments.types, arguments.model, arguments.severity)
            for shown, event in enumerate(events, start=1):
                print(event.data if arguments.json else alert_line(event), file=out, flush=True)
                if arguments.count is not None and shown >= arguments.count:
                    return 0
    except FlywheelError as error:
        print(f"flywheel: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return INTERRUPTED_EXIT_STATUS
    return 0


def alert_line(event: ServerSentEvent) -> str:
    """One alert as one line: when, which topic, and what happened."""
    try:
        cloud_event = json.loads(event.data)
        data: Json = cloud_event["data"]
        when = format_timestamp(cloud_event.get("time")) or "-"
        what = _describe(event.event, data, cloud_event.get("type", ""))
    except (ValueError, KeyError, TypeError):  # not one of ours: show it as it came
        return f"{event.event}  {event.data}"
    return f"{when}  {event.event:<17}  {what}"


def _describe(topic: str, data: Json, event_type: str) -> str:
    if topic == "drift-detected":
        return _drift(data)
    if topic == "retrain-requested":
        return f"{data['model']}  retrain requested by {data['requested_by']}: {data['reason']}"
    if topic == "model-registered":
        source = f" from run {data['source_run_id']}" if data.get("source_run_id") else ""
        return f"{data['name']} v{data['version']}  registered{source}"
    if topic == "model-promoted":
        return _alias_change(data, event_type)
    return json.dumps(data, separators=(",", ":"))


def _alias_change(data: Json, event_type: str) -> str:
    """model-promoted also says when an alias, versions or the whole model were deleted."""
    if event_type.startswith("io.flywheel.model.alias-deleted."):
        return f"{data['name']}  {data['alias']} deleted (was v{data['previous_version']})"
    if event_type.startswith("io.flywheel.model.versions-deleted."):
        versions = ", ".join(f"v{version}" for version in data["versions"])
        what = "model deleted" if data.get("model_deleted") else "deleted"
        return f"{data['name']}  {what}: {versions or 'no versions'}"
    if "alias" in data and "version" in data:
        was = f" (was v{data['previous_version']})" if data.get("previous_version") else ""
        return f"{data['name']}  {data['alias']} -> v{data['version']}{was}"
    return json.dumps(data, separators=(",", ":"))


def _drift(data: Json) -> str:
    features: list[Json] = data["features"]
    drifted = [feature for feature in features if feature["drifted"]]
    kind = "dataset drift" if data["dataset_drift"] else "drift"
    shown = ", ".join(_statistic(feature) for feature in drifted[:DRIFTED_FEATURES_SHOWN])
    more = f", +{len(drifted) - DRIFTED_FEATURES_SHOWN} more" if len(drifted) > DRIFTED_FEATURES_SHOWN else ""
    prediction = data.get("prediction_drift")
    predictions = "; predictions drifted" if prediction and prediction["drifted"] else ""
    detail = f" ({shown}{more})" if shown else ""
    return (
        f"{data['model']} v{data['version']}  {data['severity']}  {kind}: {len(drifted)} of {len(features)} "
        f"features{detail}{predictions}; {data['window_rows']} rows"
    )


def _statistic(feature: Json) -> str:
    return f"{feature['feature']} {feature['method']} {format_cell(feature['statistic'])}"


# ---------------------------------------------------------------- subscriptions


def alerts_subscribe(client: MonitorClient, arguments: argparse.Namespace) -> Report:
    """Subscribe a webhook to alerts (and model events); prints the subscription and its secret, which
    the monitor does not show again."""
    created = client.create_subscription(
        arguments.url,
        secret=arguments.secret,
        event_types=arguments.types,
        model=arguments.model,
        min_severity=arguments.severity,
        description=arguments.description,
    )
    text = format_fields([*_fields(created), ("secret", created["secret"])])
    note = "keep the secret: deliveries carry X-Flywheel-Signature: sha256=<HMAC-SHA256 of the body>"
    return Report(created, f"{text}\n\n{note}")


def alerts_subscriptions(client: MonitorClient, arguments: argparse.Namespace) -> Report:
    """Every webhook subscription, newest first."""
    page = client.list_subscriptions(arguments.max)
    headers = ["id", "url", "events", "model", "min_severity", "secret", "created"]
    rows = [
        (
            subscription["id"],
            subscription["url"],
            subscription["event_types"],
            subscription["model"] or "(all)",
            subscription["min_severity"],
            subscription["secret_hint"],
            format_timestamp(subscription["created_at"]),
        )
        for subscription in page["subscriptions"]
    ]
    table = format_table(headers, rows)
    if page.get("next_page_token"):
        table += f"\n\nthe newest {len(rows)} shown; --max shows more (up to 1000)"
    return Report(page, table)


def alerts_deliveries(client: MonitorClient, arguments: argparse.Namespace) -> Report:
    """A subscription's delivery log, newest first: status, attempts, the last answer or error."""
    page = client.list_deliveries(arguments.subscription_id, arguments.status, arguments.max)
    headers = ["id", "event", "status", "attempts", "last_code", "last_error", "when"]
    rows = [
        (
            delivery["id"],
            delivery["event_type"],
            delivery["status"],
            delivery["attempts"],
            delivery["last_status_code"],
            delivery["last_error"],
            _when(delivery),
        )
        for delivery in page["deliveries"]
    ]
    table = format_table(headers, rows)
    if page.get("next_page_token"):
        table += f"\n\nthe newest {len(rows)} shown; --max shows more (up to 1000)"
    return Report(page, table)


def alerts_unsubscribe(client: MonitorClient, arguments: argparse.Namespace) -> Report:
    """Delete a subscription (and its delivery log)."""
    client.delete_subscription(arguments.subscription_id)
    return Report(
        {"id": arguments.subscription_id, "deleted": True}, f"unsubscribed {arguments.subscription_id}"
    )


def alerts_test(client: MonitorClient, arguments: argparse.Namespace) -> Report:
    """Send a subscription's webhook a signed ping; see how it went with `flywheel alerts deliveries`."""
    delivery = client.test_subscription(arguments.subscription_id)
    text = (
        f"ping queued as delivery {delivery['id']}; follow it with: "
        f"flywheel alerts deliveries {arguments.subscription_id}"
    )
    return Report(delivery, text)


def _fields(subscription: Json) -> list[tuple[str, Any]]:
    return [
        ("id", subscription["id"]),
        ("url", subscription["url"]),
        ("events", subscription["event_types"]),
        ("model", subscription["model"] or "(all)"),
        ("min_severity", subscription["min_severity"]),
        ("description", subscription["description"] or None),
        ("created", format_timestamp(subscription["created_at"])),
    ]


def _when(delivery: Json) -> str | None:
    if delivery["status"] == "pending":
        return f"next try {format_timestamp(delivery['next_attempt_at'])}"
    if delivery["status"] == "delivered":
        return f"delivered {format_timestamp(delivery['delivered_at'])}"
    return f"failed {format_timestamp(delivery['updated_at'])}"
