"""`flywheel alerts` without a monitor: reading server-sent events, one line per alert, reconnecting with
Last-Event-ID when the stream ends, and the message when no monitor answers."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from flywheel.alert_commands import alert_line
from flywheel.cli import build_parser, main
from flywheel.monitor_client import MonitorClient, ServerSentEvent, parse_server_sent_events
from shared.events import AliasDeleted, EventPayload, VersionsDeleted


def test_server_sent_events_are_read_as_the_standard_says() -> None:
    lines = [
        "retry: 1000",
        ": listening",
        "",
        "id: e-1",
        "event: drift-detected",
        'data: {"a":',
        "data: 1}",
        "",
        ": keep-alive",
        "",
        "data:no space",
        "",
        "event: ignored-without-data",
        "",
    ]
    assert list(parse_server_sent_events(lines)) == [
        ServerSentEvent("drift-detected", '{"a":\n1}', "e-1"),
        ServerSentEvent("message", "no space", "e-1"),  # the last id stays until another is sent
    ]


def cloud_event(data: dict[str, Any], event_type: str = "t") -> str:
    return json.dumps({"id": "e", "time": "2024-05-01T12:00:03+00:00", "type": event_type, "data": data})


@pytest.mark.parametrize(
    ("topic", "data", "line"),
    [
        (
            "drift-detected",
            {
                "model": "credit",
                "version": 3,
                "severity": "critical",
                "dataset_drift": True,
                "window_rows": 5000,
                "features": [
                    {"feature": f"f{i}", "method": "psi", "statistic": 0.5 + i, "drifted": True}
                    for i in range(5)
                ]
                + [{"feature": "g", "method": "ks", "statistic": 0.01, "drifted": False}],
                "prediction_drift": {
                    "feature": "label",
                    "method": "jensenshannon",
                    "statistic": 0.2,
                    "drifted": True,
                },
            },
            "credit v3  critical  dataset drift: 5 of 6 features (f0 psi 0.5, f1 psi 1.5, f2 psi 2.5, "
            "+2 more); predictions drifted; 5000 rows",
        ),
        (
            "model-promoted",
            {"name": "credit", "alias": "production", "version": 4, "previous_version": 3},
            "credit  production -> v4 (was v3)",
        ),
        (
            "model-registered",
            {"name": "credit", "version": 4, "source_run_id": "r1"},
            "credit v4  registered from run r1",
        ),
        (
            "retrain-requested",
            {"model": "credit", "requested_by": "monitor", "reason": "drift episode 7"},
            "credit  retrain requested by monitor: drift episode 7",
        ),
    ],
)
def test_each_alert_is_one_line_saying_when_and_what(topic: str, data: dict[str, Any], line: str) -> None:
    assert (
        alert_line(ServerSentEvent(topic, cloud_event(data), "e"))
        == f"2024-05-01 12:00:03Z  {topic:<17}  {line}"
    )


@pytest.mark.parametrize(
    ("deleted", "line"),
    [
        (AliasDeleted(name="credit", alias="canary", previous_version=2), "credit  canary deleted (was v2)"),
        (VersionsDeleted(name="credit", versions=[2]), "credit  deleted: v2"),
        (
            VersionsDeleted(name="credit", versions=[1, 3], model_deleted=True),
            "credit  model deleted: v1, v3",
        ),
    ],
)
def test_deletions_on_model_promoted_say_what_was_deleted(deleted: EventPayload, line: str) -> None:
    event = cloud_event(deleted.model_dump(mode="json"), deleted.event_type)
    assert alert_line(ServerSentEvent("model-promoted", event, "e")).endswith(f"model-promoted     {line}")


def test_an_event_that_is_not_ours_is_shown_as_it_came() -> None:
    assert alert_line(ServerSentEvent("drift-detected", "not json")) == "drift-detected  not json"


def test_following_reconnects_when_the_stream_ends_asking_for_what_came_after_the_last_event() -> None:
    asked: list[httpx.Request] = []

    def stream(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        number = len(asked)
        body = f"retry: 1000\n\nid: e-{number}\nevent: drift-detected\ndata: {{}}\n\n"
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    client = MonitorClient("http://monitor")
    client._http = httpx.Client(transport=httpx.MockTransport(stream), base_url="http://monitor")
    events = client.follow_alerts(["drift-detected", "model-promoted"], "credit", "warning")
    assert [next(events).id for _ in range(3)] == ["e-1", "e-2", "e-3"]
    assert [request.headers.get("last-event-id") for request in asked] == [None, "e-1", "e-2"]
    assert dict(asked[0].url.params) == {
        "types": "drift-detected,model-promoted",
        "model": "credit",
        "min_severity": "warning",
    }


def test_tail_without_a_monitor_says_where_it_looked(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["alerts", "tail", "--monitor-url", "http://127.0.0.1:1"]) == 1
    error = capsys.readouterr().err
    assert "the monitor at http://127.0.0.1:1 did not answer" in error
    assert "FLYWHEEL_MONITOR_URL" in error


def test_subscribe_takes_the_filters_and_the_monitor_url_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    arguments = build_parser().parse_args(
        [
            "alerts",
            "subscribe",
            "https://ci/hook",
            "--types",
            "model-promoted",
            "drift-detected",
            "--severity",
            "warning",
        ]
    )
    assert (arguments.url, arguments.types, arguments.severity) == (
        "https://ci/hook",
        ["model-promoted", "drift-detected"],
        "warning",
    )
    monkeypatch.setenv("FLYWHEEL_MONITOR_URL", "http://monitor.internal:9000/")
    assert MonitorClient().base_url == "http://monitor.internal:9000"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["alerts", "tail", "--types", "run-completed"])
