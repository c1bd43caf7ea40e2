"""Which events a subscription or a stream client gets: followed topics, the model, the severity of drift
alerts (other events have none and pass it)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from services.monitor.alert_filters import AlertFilter, AlertNotice, notice_of, with_workspace
from shared.events import (
    AliasDeleted,
    CloudEvent,
    DriftDetected,
    ModelPromoted,
    RetrainRequested,
    Severity,
    VersionsDeleted,
)

NOW = datetime(2024, 5, 1, tzinfo=UTC)


def drift(model: str, severity: Severity) -> CloudEvent:
    alert = DriftDetected(
        model=model,
        version=1,
        window_start=NOW,
        window_end=NOW,
        window_rows=10,
        severity=severity,
        dataset_drift=True,
        features=[],
    )
    return CloudEvent.wrap(alert, source="/flywheel/monitor")


def test_notices_name_the_model_and_only_drift_alerts_have_a_severity() -> None:
    assert notice_of("drift-detected", drift("credit", Severity.CRITICAL)) == AlertNotice(
        "drift-detected", "credit", Severity.CRITICAL
    )
    promoted = ModelPromoted(name="credit", alias="production", version=2)
    assert notice_of("model-promoted", CloudEvent.wrap(promoted, source="/r")) == AlertNotice(
        "model-promoted", "credit"
    )
    for deleted in (
        AliasDeleted(name="credit", alias="canary", previous_version=2),
        VersionsDeleted(name="credit", versions=[1, 2], model_deleted=True),
    ):  # the other changes model-promoted carries
        assert notice_of("model-promoted", CloudEvent.wrap(deleted, source="/r")).model == "credit"
    retrain = RetrainRequested(model="churn", reason="drift", requested_by="monitor")
    assert notice_of("retrain-requested", CloudEvent.wrap(retrain, source="/m")).model == "churn"


@pytest.mark.parametrize(
    ("accepts", "notice", "expected"),
    [
        (AlertFilter.of(["drift-detected"]), AlertNotice("drift-detected", "credit", Severity.INFO), True),
        (AlertFilter.of(["model-promoted"]), AlertNotice("drift-detected", "credit", Severity.INFO), False),
        (
            AlertFilter.of(["drift-detected"], "credit"),
            AlertNotice("drift-detected", "credit", Severity.INFO),
            True,
        ),
        (
            AlertFilter.of(["drift-detected"], "credit"),
            AlertNotice("drift-detected", "churn", Severity.INFO),
            False,
        ),
        (
            AlertFilter.of(["drift-detected"], None, Severity.WARNING),
            AlertNotice("drift-detected", "credit", Severity.INFO),
            False,
        ),
        (
            AlertFilter.of(["drift-detected"], None, Severity.WARNING),
            AlertNotice("drift-detected", "credit", Severity.WARNING),
            True,
        ),
        (
            AlertFilter.of(["drift-detected"], None, Severity.WARNING),
            AlertNotice("drift-detected", "credit", Severity.CRITICAL),
            True,
        ),
        (  # a minimum severity holds back drift alerts only
            AlertFilter.of(["model-promoted"], "credit", Severity.CRITICAL),
            AlertNotice("model-promoted", "credit"),
            True,
        ),
    ],
)
def test_a_filter_accepts_followed_topics_of_its_model_at_its_severity(
    accepts: AlertFilter, notice: AlertNotice, expected: bool
) -> None:
    assert accepts.accepts(notice) is expected


def test_a_filter_of_a_workspace_accepts_only_its_models_events() -> None:
    risk = AlertFilter.of(["drift-detected"], workspace="risk")
    alert = AlertNotice("drift-detected", "credit", Severity.INFO)
    assert risk.accepts(replace(alert, workspace="risk"))
    assert not risk.accepts(replace(alert, workspace="fraud"))
    assert not risk.accepts(alert)  # a model whose workspace is unknown (deleted since) reaches nobody
    assert AlertFilter.of(["drift-detected"]).accepts(replace(alert, workspace="fraud"))  # every workspace


async def test_a_notice_takes_its_models_workspace_when_workspaces_are_on() -> None:
    asked: list[str] = []

    async def workspace_of(model: str) -> str | None:
        asked.append(model)
        return "risk"

    notice = notice_of("drift-detected", drift("credit", Severity.WARNING))
    assert (await with_workspace(notice, workspace_of)).workspace == "risk"
    assert asked == ["credit"]
    assert await with_workspace(notice, None) == notice  # access control off: nobody asked
