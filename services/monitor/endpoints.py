"""The monitor's REST routes for drift: each model's policy, its current status, the history of its
windows (drift and data quality per feature) and its alerts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from pydantic import BaseModel

from services.monitor.drift import DriftConfigError
from services.monitor.drift_monitor import DriftMonitor
from services.monitor.policy import MonitorPolicy
from services.monitor.traffic import CONFIDENCE_EDGES, percentile_ms
from services.monitor.workspaces import VisibleModels
from shared.pagination import InvalidPageToken, decode_page_token, next_page_token
from shared.service import InvalidInput, answer_errors


class Problem(BaseModel):
    detail: str


class WatchedVersion(BaseModel):
    version: int
    open_window_rows: int


class Alert(BaseModel):
    """A drift episode: the alert it raised, when it opened and closed, and the retrain it asked for."""

    id: int
    model: str
    version: int
    kind: str
    severity: str
    opened_at: datetime
    closed_at: datetime | None
    windows: int
    alert_event_id: str
    retrain_event_id: str | None
    alert: dict[str, Any]


class ModelStatus(BaseModel):
    model: str
    watched_versions: list[WatchedVersion]
    open_alerts: list[Alert]
    last_window: dict[str, Any] | None


class ReportPage(BaseModel):
    reports: list[dict[str, Any]]
    next_page_token: str | None = None


class AlertPage(BaseModel):
    alerts: list[Alert]
    next_page_token: str | None = None


class FeaturePoint(BaseModel):
    version: int
    window_end: datetime
    rows: int
    method: str | None
    statistic: float | None
    threshold: float | None
    drifted: bool | None
    missing_rate: float
    issues: list[str]


async def monitor(request: Request) -> DriftMonitor:
    found: DriftMonitor = request.app.state.monitor
    return found


Monitor = Annotated[DriftMonitor, Depends(monitor)]
PageSize = Annotated[int, Query(ge=1, le=1000)]
router = APIRouter(tags=["drift"], responses={400: {"model": Problem}, 422: {"model": InvalidInput}})


@router.get("/models/{name}/policy")
async def get_policy(name: str, monitor: Monitor) -> MonitorPolicy:
    """How the model's traffic is windowed and judged, and when it alerts and asks for retraining (the
    defaults until one is set)."""
    return await monitor.policy(name)


@router.put("/models/{name}/policy")
async def set_policy(name: str, policy: MonitorPolicy, monitor: Monitor) -> MonitorPolicy:
    """Set the model's policy; the versions being watched start new windows under it. A method that does
    not fit a feature (KS on a categorical one, an unknown feature) is a 422 naming it."""
    await monitor.set_policy(name, policy)
    return policy


@router.get("/models/{name}/status")
async def status(name: str, monitor: Monitor) -> ModelStatus:
    """What is watched now, the open alerts, and the last window's verdict."""
    watched = [
        WatchedVersion(version=version, open_window_rows=rows)
        for (model, version), rows in sorted(monitor.watching().items())
        if model == name
    ]
    async with monitor.database.acquire() as connection:
        open_alerts = await connection.fetch(
            "SELECT * FROM episodes WHERE model = $1 AND closed_at IS NULL ORDER BY id DESC", name
        )
        last = await connection.fetchval(
            "SELECT report FROM window_reports WHERE model = $1 ORDER BY window_end DESC, id DESC LIMIT 1",
            name,
        )
    return ModelStatus(
        model=name,
        watched_versions=watched,
        open_alerts=[Alert(**dict(row)) for row in open_alerts],
        last_window=last,
    )


@router.get("/models/{name}/reports")
async def reports(
    name: str,
    monitor: Monitor,
    version: int | None = None,
    page_size: PageSize = 50,
    page_token: str | None = None,
) -> ReportPage:
    """The model's closed windows, newest first: per feature the method, statistic, threshold and verdict,
    and the data quality (missing rate, values outside the training range, unseen categories)."""
    offset = decode_page_token(page_token)
    async with monitor.database.acquire() as connection:
        rows = await connection.fetch(
            "SELECT report FROM window_reports WHERE model = $1 AND ($2::int IS NULL OR version = $2) "
            "ORDER BY window_end DESC, id DESC LIMIT $3 OFFSET $4",
            name,
            version,
            page_size + 1,
            offset,
        )
    return ReportPage(
        reports=[row["report"] for row in rows[:page_size]],
        next_page_token=next_page_token(offset, page_size, len(rows)),
    )


@router.get("/models/{name}/features/{feature}")
async def feature_history(
    name: str, feature: str, monitor: Monitor, version: int | None = None, limit: PageSize = 200
) -> list[FeaturePoint]:
    """One feature's drift statistic and data quality over the model's last `limit` windows, oldest
    first (for a chart)."""
    async with monitor.database.acquire() as connection:
        rows = await connection.fetch(
            "SELECT version, window_end, rows, report FROM window_reports "
            "WHERE model = $1 AND ($2::int IS NULL OR version = $2) "
            "ORDER BY window_end DESC, id DESC LIMIT $3",
            name,
            version,
            limit,
        )
    points = []
    for row in reversed(rows):
        found = next((f for f in row["report"]["features"] if f["feature"] == feature), None)
        if found is None:
            continue
        drift = found["drift"] or {}
        points.append(
            FeaturePoint(
                version=row["version"],
                window_end=row["window_end"],
                rows=row["rows"],
                method=drift.get("method"),
                statistic=drift.get("statistic"),
                threshold=drift.get("threshold"),
                drifted=drift.get("drifted"),
                missing_rate=found["quality"]["missing_rate"],
                issues=found["quality"]["issues"],
            )
        )
    return points


class Timeline(BaseModel):
    """Everything the dashboard draws for one model, on one time axis."""

    model: str
    traffic: list[dict[str, Any]]
    windows: list[dict[str, Any]]
    alerts: list[dict[str, Any]]
    retrains: list[dict[str, Any]]
    performance: list[dict[str, Any]]


@router.get("/models/{name}/timeline")
async def timeline(
    name: str, monitor: Monitor, hours: Annotated[float, Query(gt=0, le=24 * 90)] = 24
) -> Timeline:
    """The model's last `hours`: traffic per minute (volume, latency percentiles, confidence histogram),
    every window's drift per feature, alerts, retrain requests and performance from ground truth."""
    since = datetime.now(UTC) - timedelta(hours=hours)
    async with monitor.database.acquire() as connection:
        traffic = await connection.fetch(
            "SELECT * FROM traffic_minutes WHERE model = $1 AND minute >= $2 ORDER BY minute, version",
            name,
            since,
        )
        windows = await connection.fetch(
            "SELECT report FROM window_reports WHERE model = $1 AND window_end >= $2 ORDER BY window_end, id",
            name,
            since,
        )
        episodes = await connection.fetch(
            "SELECT id, version, kind, severity, opened_at, closed_at FROM episodes "
            "WHERE model = $1 AND (closed_at IS NULL OR closed_at >= $2) ORDER BY id",
            name,
            since,
        )
        retrains = await connection.fetch(
            "SELECT event_id, requested_at, reason FROM retrain_requests "
            "WHERE model = $1 AND requested_at >= $2 ORDER BY requested_at",
            name,
            since,
        )
        performance = await connection.fetch(
            "SELECT version, window_end, labels, metric, value, baseline, dropped FROM performance_windows "
            "WHERE model = $1 AND window_end >= $2 ORDER BY window_end, id",
            name,
            since,
        )
    return Timeline(
        model=name,
        traffic=[
            {
                "minute": row["minute"],
                "version": row["version"],
                "rows": row["rows"],
                "latency_ms": {
                    f"p{round(share * 100)}": percentile_ms(list(row["latency_counts"]), share)
                    for share in (0.5, 0.95, 0.99)
                },
                "confidence": {"edges": list(CONFIDENCE_EDGES), "counts": list(row["confidence_counts"])},
            }
            for row in traffic
        ],
        windows=[_window_point(row["report"]) for row in windows],
        alerts=[dict(row) for row in episodes],
        retrains=[dict(row) for row in retrains],
        performance=[dict(row) for row in performance],
    )


def _window_point(report: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": report["version"],
        "window_start": report["window_start"],
        "window_end": report["window_end"],
        "rows": report["rows"],
        "drift_share": report["drift_share"],
        "dataset_drift": report["dataset_drift"],
        "features": {
            feature["feature"]: {
                key: feature["drift"][key] for key in ("method", "statistic", "threshold", "drifted")
            }
            for feature in report["features"]
            if feature["drift"] is not None
        },
        "prediction_drift": report["prediction_drift"],
    }


@router.get("/alerts")
async def alerts(
    monitor: Monitor,
    visible: VisibleModels,
    model: str | None = None,
    open_only: bool = False,
    page_size: PageSize = 50,
    page_token: str | None = None,
) -> AlertPage:
    """Drift alerts (one per episode) of the caller's workspace's models, newest first."""
    offset = decode_page_token(page_token)
    async with monitor.database.acquire() as connection:
        rows = await connection.fetch(
            "SELECT * FROM episodes WHERE ($1::text IS NULL OR model = $1) AND (NOT $2 OR closed_at IS NULL) "
            "AND ($5::text[] IS NULL OR model = ANY($5::text[])) ORDER BY id DESC LIMIT $3 OFFSET $4",
            model,
            open_only,
            page_size + 1,
            offset,
            None if visible is None else sorted(visible),
        )
    return AlertPage(
        alerts=[Alert(**dict(row)) for row in rows[:page_size]],
        next_page_token=next_page_token(offset, page_size, len(rows)),
    )


def add_error_handlers(app: FastAPI) -> None:
    answer_errors(app, {InvalidPageToken: 400, DriftConfigError: 422})
