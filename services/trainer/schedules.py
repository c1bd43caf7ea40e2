"""Retraining on a schedule: a cron expression per model (e.g. `0 3 1 */3 *`, quarterly) that emits a
`retrain-requested` event at each due time, exactly once across replicas.

Firing is a row lock (SKIP LOCKED) plus the move of `next_run_at`, in the same transaction as the
event's outbox row: a replica that crashes mid-way fires nothing, and the next one fires it.

A schedule belongs to its model's workspace: only that workspace sees it, sets it or deletes it (for any
other, the model reads as missing), and its dataset must be that workspace's. A due schedule whose model
is gone from that workspace is dropped instead of fired.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg
from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.trainer.registry_client import RegistryClient
from services.trainer.service import check_dataset_uri
from shared.artifacts import ArtifactStore
from shared.db import Connection
from shared.events import CloudEvent, RetrainRequested, Topic
from shared.outbox import enqueue_event

log = logging.getLogger(__name__)

EVENT_SOURCE = "/flywheel/trainer/schedules"
SCHEDULE_COLUMNS = (
    "model_name, cron, dataset_uri, workspace, next_run_at, last_run_at, created_at, updated_at"
)


class ScheduleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cron: str = Field(description="five-field cron expression in UTC, e.g. '0 3 1 */3 *' (quarterly)")
    dataset_uri: str | None = Field(default=None, description="data to retrain on; default: the last run's")

    @field_validator("cron")
    @classmethod
    def _is_cron(cls, cron: str) -> str:
        if len(cron.split()) != 5 or not croniter.is_valid(cron):
            raise ValueError(f"{cron!r} is not a five-field cron expression (minute hour day month weekday)")
        return cron


class Schedule(BaseModel):
    model_name: str
    cron: str
    dataset_uri: str | None
    workspace: str = Field(description="the model's")
    next_run_at: datetime
    last_run_at: datetime | None
    created_at: datetime
    updated_at: datetime


def next_time(cron: str, after: datetime) -> datetime:
    following: datetime = croniter(cron, after).get_next(datetime)
    return following


class ScheduleNotFound(LookupError):
    pass


class UnknownModel(LookupError):
    """No such model in the caller's workspace."""


class RetrainScheduler:
    """In every method, `scope` is the caller's workspace (None: every workspace)."""

    def __init__(
        self,
        database: asyncpg.Pool,
        on_events: Callable[[], None],
        registry: RegistryClient,
        artifacts: ArtifactStore,
    ) -> None:
        self.database = database
        self.on_events = on_events
        self.registry = registry
        self.artifacts = artifacts

    async def set(self, model_name: str, request: ScheduleRequest, scope: str | None = None) -> Schedule:
        """Schedule retraining of a model of the caller's workspace (UnknownModel for any other)."""
        workspace = await self.registry.model_workspace(model_name)
        if workspace is None or scope not in (None, workspace):
            raise UnknownModel(f"no model named {model_name!r}")
        if request.dataset_uri is not None:
            check_dataset_uri(self.artifacts, request.dataset_uri, scope)
        async with self.database.acquire() as connection:
            row = await connection.fetchrow(
                f"""
                INSERT INTO retrain_schedules (model_name, cron, dataset_uri, next_run_at, workspace)
                VALUES ($1, $2, $3, $4, $5)
                ON CONFLICT (model_name) DO UPDATE SET cron = excluded.cron,
                    dataset_uri = excluded.dataset_uri, next_run_at = excluded.next_run_at,
                    workspace = excluded.workspace, updated_at = now()
                RETURNING {SCHEDULE_COLUMNS}
                """,
                model_name,
                request.cron,
                request.dataset_uri,
                next_time(request.cron, datetime.now(UTC)),
                workspace,
            )
        assert row is not None  # an upsert always returns its row
        return Schedule(**dict(row))

    async def all(self, scope: str | None = None) -> list[Schedule]:
        async with self.database.acquire() as connection:
            rows = await connection.fetch(
                f"SELECT {SCHEDULE_COLUMNS} FROM retrain_schedules "
                "WHERE $1::text IS NULL OR workspace = $1 ORDER BY model_name",
                scope,
            )
        return [Schedule(**dict(row)) for row in rows]

    async def delete(self, model_name: str, scope: str | None = None) -> None:
        async with self.database.acquire() as connection:
            deleted = await connection.fetchval(
                "DELETE FROM retrain_schedules "
                "WHERE model_name = $1 AND ($2::text IS NULL OR workspace = $2) RETURNING true",
                model_name,
                scope,
            )
        if not deleted:
            raise ScheduleNotFound(f"model {model_name!r} has no retraining schedule")

    async def fire_due(self, now: datetime | None = None) -> list[str]:
        """Emit retrain-requested for every schedule that is due; the models fired."""
        now = now or datetime.now(UTC)
        async with self.database.acquire() as connection, connection.transaction():
            rows = await connection.fetch(
                "SELECT model_name, cron, dataset_uri, next_run_at, workspace FROM retrain_schedules "
                "WHERE next_run_at <= $1 FOR UPDATE SKIP LOCKED",
                now,
            )
            fired = []
            for row in rows:
                # A schedule outlives its model in the registry: if the model is gone, or the name now
                # belongs to another workspace's model, the schedule is dropped, never fired at that model.
                if await self.registry.model_workspace(row["model_name"]) != row["workspace"]:
                    await connection.execute(
                        "DELETE FROM retrain_schedules WHERE model_name = $1", row["model_name"]
                    )
                    log.warning(
                        "schedule dropped: its model is gone from workspace %s",
                        row["workspace"],
                        extra={"model": row["model_name"]},
                    )
                    continue
                await self._fire(
                    connection, row["model_name"], row["cron"], row["dataset_uri"], row["next_run_at"], now
                )
                fired.append(row["model_name"])
        if fired:
            self.on_events()
        return fired

    async def _fire(
        self,
        connection: Connection,
        model_name: str,
        cron: str,
        dataset_uri: str | None,
        due: datetime,
        now: datetime,
    ) -> None:
        request = RetrainRequested(
            model=model_name,
            reason=f"schedule ({cron})",
            requested_by="trainer-schedule",
            dataset_uri=dataset_uri,
        )
        await enqueue_event(
            connection,
            Topic.RETRAIN_REQUESTED,
            CloudEvent.wrap(request, source=EVENT_SOURCE, subject=model_name),
            key=model_name,
        )
        # Missed times (the platform was down) fire once, not once per missed time.
        await connection.execute(
            "UPDATE retrain_schedules SET last_run_at = $2, next_run_at = $3 WHERE model_name = $1",
            model_name,
            now,
            next_time(cron, max(due, now)),
        )
        log.info("scheduled retrain requested", extra={"model": model_name, "cron": cron})

    async def run_forever(self, poll_seconds: float) -> None:
        while True:
            try:
                await self.fire_due()
            except Exception:
                log.exception("firing retraining schedules failed; retrying")
            await asyncio.sleep(poll_seconds)
