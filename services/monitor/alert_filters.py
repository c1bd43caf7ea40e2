"""Which events an audience wants: a webhook subscription, or a client of the alert stream.

An event is reduced to what filters look at (`AlertNotice`: its topic, its model, its model's workspace,
and for drift alerts its severity); a filter (`AlertFilter`) accepts it when it follows the topic, names no
model or the event's, sees every workspace or the model's, and, for drift alerts, asks for no more than
the alert's severity.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace

from shared.events import (
    AliasDeleted,
    CloudEvent,
    DriftDetected,
    ModelPromoted,
    ModelRegistered,
    RetrainRequested,
    Severity,
    VersionsDeleted,
)

SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


@dataclass(frozen=True, slots=True)
class AlertNotice:
    """What filters see of an event."""

    topic: str
    model: str | None
    severity: Severity | None = None  # only drift alerts have one
    workspace: str | None = None  # the model's, once the registry said (None: unknown, or not asked)


def notice_of(topic: str, event: CloudEvent) -> AlertNotice:
    """The notice of an event read from `topic` (InvalidEvent when its payload is not valid)."""
    payload = event.payload()
    if isinstance(payload, DriftDetected):
        return AlertNotice(topic, payload.model, payload.severity)
    if isinstance(payload, RetrainRequested):
        return AlertNotice(topic, payload.model)
    if isinstance(payload, ModelRegistered | ModelPromoted | AliasDeleted | VersionsDeleted):
        return AlertNotice(topic, payload.name)
    return AlertNotice(topic, None)


ModelWorkspace = Callable[[str], Awaitable[str | None]]
"""A model's workspace by its name (None: no such model), as the registry says."""


async def with_workspace(notice: AlertNotice, workspace_of: ModelWorkspace | None) -> AlertNotice:
    """The notice with its model's workspace; unchanged when workspaces are off (`workspace_of` None)."""
    if workspace_of is None or notice.model is None:
        return notice
    return replace(notice, workspace=await workspace_of(notice.model))


@dataclass(frozen=True, slots=True)
class AlertFilter:
    topics: frozenset[str]
    model: str | None = None  # None: every model
    min_severity: Severity = Severity.INFO
    workspace: str | None = None  # None: every workspace's models (the services' token, access control off)

    @classmethod
    def of(
        cls,
        topics: Iterable[str],
        model: str | None = None,
        min_severity: Severity = Severity.INFO,
        workspace: str | None = None,
    ) -> AlertFilter:
        return cls(frozenset(str(topic) for topic in topics), model, min_severity, workspace)

    def accepts(self, notice: AlertNotice) -> bool:
        if notice.topic not in self.topics:
            return False
        if self.model is not None and notice.model != self.model:
            return False
        if self.workspace is not None and notice.workspace != self.workspace:
            return False
        return notice.severity is None or SEVERITY_RANK[notice.severity] >= SEVERITY_RANK[self.min_severity]
