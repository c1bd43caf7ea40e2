"""A model's monitoring policy: how its windows are cut and judged, when a drift becomes an alert, and
when the monitor asks the trainer for a new version."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from services.monitor.drift import DriftConfig
from services.monitor.performance import PerformancePolicy


class AlertPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    critical_drift_share: float = Field(
        default=0.75, gt=0, le=1, description="a drift alert is critical from this share of drifted features"
    )
    recovery_windows: int = Field(
        default=2,
        ge=1,
        description="clean windows in a row that end an episode (the next drift alerts again)",
    )


class RetrainPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    on_drift: bool = Field(default=True, description="ask for a new version when a drift episode opens")
    on_performance_drop: bool = Field(
        default=True, description="ask for a new version when the metric drops beyond the policy's limit"
    )
    cooldown_seconds: float = Field(
        default=6 * 3600, ge=0, description="at most one request per model in this time"
    )
    dataset_uri: str | None = Field(default=None, description="data to train on; default: the last run's")


class MonitorPolicy(BaseModel):
    """Everything defaults to Evidently's drift rules and a retrain request per drift episode."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    drift: DriftConfig = Field(default_factory=DriftConfig)
    alerts: AlertPolicy = Field(default_factory=AlertPolicy)
    retrain: RetrainPolicy = Field(default_factory=RetrainPolicy)
    performance: PerformancePolicy = Field(default_factory=PerformancePolicy)
