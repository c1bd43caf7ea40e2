"""Watching production traffic: predictions stream into per-version windows; each closed window is judged
against the version's training reference, stored, and turned into alerts and retrain requests.

An episode opens at the first drifting window of a version (dataset drift, or drift of the model's
predictions) and raises one `drift-detected` alert; it stays open while windows keep drifting and
closes after `recovery_windows` clean windows in a row, so a lasting drift alerts once, not once per
window. When an episode opens and the model's policy says so, a `retrain-requested` goes to the trainer
(at most one per model per cool-down). Reports, episodes, requests and the events announcing them are
written in one transaction (the events through the outbox).

Window state lives in memory (bounded per version, see `windows.py`): a replica that stops loses its
open windows, and the consumer group hands the model's partition to another replica, which starts
new ones.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from prometheus_client import Counter, Gauge

from services.monitor.drift import DriftConfigError, WindowReport, check_config, evaluate
from services.monitor.performance import (
    LOWER_IS_BETTER,
    LabelWindow,
    PendingPredictions,
    default_metric,
    dropped,
    score,
)
from services.monitor.policy import MonitorPolicy
from services.monitor.references import References
from services.monitor.traffic import TrafficCounter
from services.monitor.windows import TumblingWindows, Window
from shared.db import Connection
from shared.events import (
    CloudEvent,
    DriftDetected,
    FeatureDrift,
    GroundTruth,
    PredictionLogged,
    RetrainRequested,
    Severity,
    Topic,
)
from shared.outbox import enqueue_event

log = logging.getLogger(__name__)

SOURCE = "/flywheel/monitor"
PREDICTIONS_SEEN = Counter(
    "flywheel_monitor_predictions_total", "Predictions read from prediction-logged", ["model", "compared"]
)
WINDOWS_CLOSED = Counter("flywheel_monitor_windows_total", "Windows judged", ["model", "version", "verdict"])
ALERTS = Counter("flywheel_monitor_alerts_total", "drift-detected alerts raised", ["model", "severity"])
RETRAINS = Counter("flywheel_monitor_retrain_requests_total", "retrain-requested sent", ["model"])
LABELS = Counter("flywheel_monitor_labels_total", "Ground-truth labels read", ["model", "outcome"])
WATCHED = Gauge("flywheel_monitor_versions_watched", "Model versions with an open window")


@dataclass
class Watched:
    """One model version being watched: its windows and the policy they were cut by."""

    windows: TumblingWindows
    policy: MonitorPolicy


class DriftMonitor:
    def __init__(
        self,
        database: asyncpg.Pool,
        references: References,
        on_events: Callable[[], None],
        *,
        pending_predictions: int = 200_000,
        seed: int = 0,
    ) -> None:
        self.database = database
        self.references = references
        self.on_events = on_events  # wakes the outbox publisher after a commit with events
        self.seed = seed
        self.traffic = TrafficCounter()
        self.pending = PendingPredictions(pending_predictions)
        self._labels: dict[tuple[str, int], LabelWindow] = {}
        self._watched: dict[tuple[str, int], Watched | None] = {}
        self._policies: dict[str, MonitorPolicy] = {}

    # ------------------------------------------------------------ policies

    async def policy(self, model: str) -> MonitorPolicy:
        if model not in self._policies:
            async with self.database.acquire() as connection:
                stored = await connection.fetchval("SELECT policy FROM policies WHERE model = $1", model)
            self._policies[model] = (
                MonitorPolicy() if stored is None else MonitorPolicy.model_validate(stored)
            )
        return self._policies[model]

    async def set_policy(self, model: str, policy: MonitorPolicy) -> None:
        """Store a model's policy; versions being watched start new windows under it (checked against
        their references first: DriftConfigError names what does not fit)."""
        for (name, _), watched in self._watched.items():
            if name == model and watched is not None:
                check_config(policy.drift, watched.windows.reference)
        async with self.database.acquire() as connection:
            await connection.execute(
                "INSERT INTO policies (model, policy) VALUES ($1, $2) "
                "ON CONFLICT (model) DO UPDATE SET policy = $2, updated_at = now()",
                model,
                policy.model_dump(mode="json"),
            )
        self._policies[model] = policy
        for key in [key for key in self._watched if key[0] == model]:
            del self._watched[key]  # re-cut under the new policy (the open windows are dropped)

    # ------------------------------------------------------------ traffic

    async def observe(self, event: PredictionLogged) -> None:
        """Stream one prediction-logged batch into its version's window; judge the windows it closes."""
        watched = await self._watch(event.model, event.version)
        PREDICTIONS_SEEN.labels(event.model, str(watched is not None).lower()).inc(event.rows)
        self.traffic.add(event)
        if not event.shadow:  # labels judge what callers were answered
            output = (watched.windows.settings.prediction_output if watched else None) or "label"
            self.pending.add(event, output if output in event.outputs else "variable")
        if watched is None:
            return
        for window in watched.windows.add_event(event):
            await self._judge(window, watched.policy)

    async def tick(self, now: datetime | None = None) -> None:
        """Close the windows whose period has ended (so quiet models still report)."""
        now = now or datetime.now(UTC)
        await self.flush_traffic(now)
        for watched in list(self._watched.values()):
            if watched is not None and (window := watched.windows.close_if_due(now)) is not None:
                await self._judge(window, watched.policy)

    def watching(self) -> dict[tuple[str, int], int]:
        """The versions watched and the rows in their open windows."""
        return {
            key: watched.windows.current.rows if watched.windows.current else 0
            for key, watched in self._watched.items()
            if watched is not None
        }

    async def _watch(self, model: str, version: int) -> Watched | None:
        key = (model, version)
        if key not in self._watched:
            reference = await self.references.of(model, version)
            policy = await self.policy(model)
            watched = None
            if reference is not None:
                try:
                    check_config(policy.drift, reference)
                    windows = TumblingWindows(model, version, reference, policy.drift.window, seed=self.seed)
                    watched = Watched(windows, policy)
                except DriftConfigError as error:
                    log.error(
                        "the model's drift policy does not fit this version",
                        extra={"model": model, "version": version, "error": str(error)},
                    )
            self._watched[key] = watched
            WATCHED.set(sum(1 for state in self._watched.values() if state is not None))
        return self._watched[key]

    # ------------------------------------------------------------ verdicts

    async def _judge(self, window: Window, policy: MonitorPolicy) -> None:
        started = time.perf_counter()
        report = evaluate(window, policy.drift)
        drifting = report.dataset_drift or bool(report.prediction_drift and report.prediction_drift.drifted)
        verdict = "drift" if drifting else "clean"
        WINDOWS_CLOSED.labels(report.model, str(report.version), verdict).inc()
        drifted = [drift.feature for drift in report.feature_drifts() if drift.drifted]
        named = ", ".join(drifted[:5]) + (", ..." if len(drifted) > 5 else "")
        predictions = report.prediction_drift is not None and report.prediction_drift.drifted
        episode = Episode(
            model=report.model,
            version=report.version,
            kind="data",
            at=report.window_end,
            severity=(
                Severity.CRITICAL
                if report.drift_share >= policy.alerts.critical_drift_share
                else Severity.WARNING
            ),
            alert=lambda severity: DriftDetected(
                model=report.model,
                version=report.version,
                window_start=report.window_start,
                window_end=report.window_end,
                window_rows=report.rows,
                severity=severity,
                dataset_drift=report.dataset_drift,
                features=report.feature_drifts(),
                prediction_drift=report.prediction_drift,
            ),
            retrain=policy.retrain.on_drift,
            reason=(
                f"drift in {report.model} v{report.version}: {len(drifted)} of {report.compared_features} "
                f"features ({named})" + (", and its predictions" if predictions else "")
            ),
        )
        async with self.database.acquire() as connection, connection.transaction():
            await _store_report(connection, report)
            events = await self._follow_episode(connection, episode, drifting, policy)
        if events:
            self.on_events()
        log.info(
            "window judged",
            extra={
                "model": report.model,
                "version": report.version,
                "rows": report.rows,
                "verdict": verdict,
                "drift_share": round(report.drift_share, 3),
                "seconds": round(time.perf_counter() - started, 4),
            },
        )

    async def _follow_episode(
        self, connection: Connection, episode: Episode, drifting: bool, policy: MonitorPolicy
    ) -> int:
        """Open, extend or close the version's episode of this kind; the number of events enqueued."""
        open_episode = await connection.fetchrow(
            "SELECT id, clean_windows FROM episodes WHERE model = $1 AND version = $2 AND kind = $3 "
            "AND closed_at IS NULL FOR UPDATE",
            episode.model,
            episode.version,
            episode.kind,
        )
        if open_episode is not None:
            if drifting:
                await connection.execute(
                    "UPDATE episodes SET windows = windows + 1, clean_windows = 0 WHERE id = $1",
                    open_episode["id"],
                )
            elif open_episode["clean_windows"] + 1 >= policy.alerts.recovery_windows:
                await connection.execute(
                    "UPDATE episodes SET clean_windows = clean_windows + 1, closed_at = $2 WHERE id = $1",
                    open_episode["id"],
                    episode.at,
                )
            else:
                await connection.execute(
                    "UPDATE episodes SET clean_windows = clean_windows + 1 WHERE id = $1", open_episode["id"]
                )
            return 0
        if not drifting:
            return 0
        alert = episode.alert(episode.severity)
        event = CloudEvent.wrap(alert, source=SOURCE, subject=f"{episode.model}/{episode.version}")
        episode_id = await connection.fetchval(
            "INSERT INTO episodes (model, version, kind, severity, opened_at, alert_event_id, alert) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            episode.model,
            episode.version,
            episode.kind,
            episode.severity.value,
            episode.at,
            event.id,
            alert.model_dump(mode="json"),
        )
        await enqueue_event(connection, Topic.DRIFT_DETECTED, event, key=episode.model)
        ALERTS.labels(episode.model, episode.severity.value).inc()
        if episode.retrain and await _cooled_down(connection, episode.model, policy):
            await self._request_retrain(connection, episode, episode_id, event.id, policy)
            return 2
        return 1

    async def _request_retrain(
        self, connection: Connection, episode: Episode, episode_id: int, alert_id: str, policy: MonitorPolicy
    ) -> None:
        request = RetrainRequested(
            model=episode.model,
            reason=episode.reason,
            requested_by="monitor",
            dataset_uri=policy.retrain.dataset_uri,
            trigger_event_id=alert_id,
        )
        event = CloudEvent.wrap(request, source=SOURCE, subject=episode.model)
        await connection.execute(
            "INSERT INTO retrain_requests (event_id, model, episode_id, reason) VALUES ($1, $2, $3, $4)",
            event.id,
            episode.model,
            episode_id,
            episode.reason,
        )
        await connection.execute(
            "UPDATE episodes SET retrain_event_id = $2 WHERE id = $1", episode_id, event.id
        )
        await enqueue_event(connection, Topic.RETRAIN_REQUESTED, event, key=episode.model)
        RETRAINS.labels(episode.model).inc()

    # ------------------------------------------------------------ ground truth

    async def observe_label(self, truth: GroundTruth) -> None:
        """Join a label with the prediction it is for; judge the version's label window when it is full."""
        predicted = self.pending.take(truth.request_id)
        if predicted is None or (truth.model is not None and truth.model != predicted.model):
            LABELS.labels(truth.model or "", "unmatched").inc()
            return
        LABELS.labels(predicted.model, "matched").inc()
        key = (predicted.model, predicted.version)
        window = self._labels.setdefault(key, LabelWindow(predicted.model, predicted.version))
        window.predicted.append(predicted.value)
        window.actual.append(truth.label)
        window.probabilities.append(predicted.positive_probability)
        policy = await self.policy(predicted.model)
        if len(window.actual) >= policy.performance.window_labels:
            del self._labels[key]
            await self._judge_performance(window, policy, truth.observed_at)

    async def _judge_performance(self, window: LabelWindow, policy: MonitorPolicy, at: datetime) -> None:
        metric = policy.performance.metric or default_metric(window.predicted)
        value = score(window, metric)
        async with self.database.acquire() as connection, connection.transaction():
            baseline = policy.performance.baseline
            if baseline is None:
                baseline = await connection.fetchval(
                    "SELECT value FROM performance_windows WHERE model = $1 AND version = $2 AND metric = $3 "
                    "ORDER BY id LIMIT 1",
                    window.model,
                    window.version,
                    metric,
                )
            baseline = value if baseline is None else baseline
            worse = dropped(metric, value, baseline, policy.performance.max_drop)
            await connection.execute(
                "INSERT INTO performance_windows (model, version, window_end, labels, metric, value, "
                "baseline, dropped) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                window.model,
                window.version,
                at,
                len(window.actual),
                metric,
                value,
                baseline,
                worse,
            )
            limit = (
                baseline + policy.performance.max_drop
                if metric in LOWER_IS_BETTER
                else baseline - policy.performance.max_drop
            )
            episode = Episode(
                model=window.model,
                version=window.version,
                kind="performance",
                at=at,
                severity=Severity.CRITICAL
                if abs(value - baseline) > 2 * policy.performance.max_drop
                else Severity.WARNING,
                alert=lambda severity: DriftDetected(
                    model=window.model,
                    version=window.version,
                    window_start=at,
                    window_end=at,
                    window_rows=len(window.actual),
                    severity=severity,
                    dataset_drift=False,
                    features=[
                        FeatureDrift(
                            feature=metric,
                            method="performance",
                            statistic=value,
                            threshold=limit,
                            drifted=True,
                        )
                    ],
                ),
                retrain=policy.retrain.on_performance_drop,
                reason=f"{window.model} v{window.version}: {metric} {value:.4f}, baseline {baseline:.4f}",
            )
            events = await self._follow_episode(connection, episode, worse, policy)
        if events:
            self.on_events()

    # ------------------------------------------------------------ traffic

    async def flush_traffic(self, now: datetime, *, everything: bool = False) -> None:
        """Write the minutes that are over (added to what another replica or an earlier run wrote)."""
        minutes = self.traffic.finished(now, everything=everything)
        if not minutes:
            return
        async with self.database.acquire() as connection:
            await connection.executemany(
                "INSERT INTO traffic_minutes AS t (model, version, minute, rows, latency_counts, "
                "confidence_counts) VALUES ($1, $2, $3, $4, $5, $6) "
                "ON CONFLICT (model, version, minute) DO UPDATE SET rows = t.rows + excluded.rows, "
                "latency_counts = add_counts(t.latency_counts, excluded.latency_counts), "
                "confidence_counts = add_counts(t.confidence_counts, excluded.confidence_counts)",
                [
                    (m.model, m.version, m.minute, m.rows, m.latency_counts, m.confidence_counts)
                    for m in minutes
                ],
            )


@dataclass
class Episode:
    """What a judged window would open an episode with: its alert, and the retrain request's reason."""

    model: str
    version: int
    kind: str  # "data" or "performance"
    at: datetime
    severity: Severity
    alert: Callable[[Severity], DriftDetected]
    retrain: bool
    reason: str


async def _store_report(connection: Connection, report: WindowReport) -> None:
    await connection.execute(
        "INSERT INTO window_reports (model, version, window_start, window_end, rows, dataset_drift, "
        "drift_share, quality_issues, report) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        report.model,
        report.version,
        report.window_start,
        report.window_end,
        report.rows,
        report.dataset_drift,
        report.drift_share,
        report.quality_issues,
        report.model_dump(mode="json"),
    )


async def _cooled_down(connection: Connection, model: str, policy: MonitorPolicy) -> bool:
    last: Any = await connection.fetchval(
        "SELECT max(requested_at) FROM retrain_requests WHERE model = $1", model
    )
    return last is None or (datetime.now(UTC) - last).total_seconds() >= policy.retrain.cooldown_seconds
