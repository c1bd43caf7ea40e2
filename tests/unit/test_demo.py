"""`flywheel demo`'s story and what it prints, against a fake platform (no servers, a fake clock)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from flywheel.demo import (
    WINDOW_ROWS,
    DemoFailure,
    DemoOptions,
    Services,
    Timeline,
    default_model_name,
    format_drifted_features,
    format_gate,
    format_metrics,
    tell_story,
)
from flywheel.errors import NotFoundError

METRICS = {"roc_auc": 0.7012, "accuracy": 0.65, "f1": 0.6, "log_loss": 0.61}


class FakePlatform:
    """Registry, trainer, monitor and serving in one: v1 trains at once, is promoted; after more than the
    clean predictions, the monitor alerts and a retrain job appears; v2's gate says `v2_wins`."""

    def __init__(self, clean_predictions: int, v2_wins: bool = True) -> None:
        self.clean_predictions = clean_predictions
        self.v2_wins = v2_wins
        self.production: int | None = None
        self.served = 0
        self.jobs: list[dict[str, Any]] = []
        self.policy: dict[str, Any] = {}

    def upload_dataset(self, path: str | Path) -> dict[str, Any]:
        assert Path(path).stat().st_size > 0
        return {"uri": f"s3://flywheel/datasets/{Path(path).name}"}

    def submit_job(self, request: dict[str, Any]) -> dict[str, Any]:
        gate = {"metric": "roc_auc", "challenger": 0.7012, "champion": None, "champion_version": None}
        gate |= {"margin": 0.0, "promoted": True, "promote_to": "production", "reason": "no champion"}
        job = {"id": "job-1", "status": "succeeded", "result": {"metrics": METRICS, "gate": gate}}
        self.jobs.append(job)
        self.production = 1
        return job

    def get_job(self, job_id: str) -> dict[str, Any]:
        return next(job for job in self.jobs if job["id"] == job_id)

    def list_jobs(self, model: str | None = None, page_size: int = 100) -> dict[str, Any]:
        if self.served > self.clean_predictions and len(self.jobs) == 1:
            gate = {"metric": "roc_auc", "challenger": 0.748, "champion": 0.614, "champion_version": 1}
            gate |= {"margin": 0.0, "promoted": self.v2_wins, "promote_to": "production", "reason": "..."}
            metrics = METRICS | {"roc_auc": 0.748}
            self.jobs.append(
                {"id": "job-2", "status": "succeeded", "result": {"metrics": metrics, "gate": gate}}
            )
            self.production = 2 if self.v2_wins else 1
        return {"jobs": self.jobs[::-1]}

    def get_version_by_alias(self, name: str, alias: str) -> dict[str, Any]:
        if self.production is None:
            raise NotFoundError("no such alias", 404)
        return {"version": self.production}

    def set_policy(self, model: str, policy: dict[str, Any]) -> dict[str, Any]:
        self.policy = policy
        return policy

    def list_reports(self, model: str, version: int | None = None, page_size: int = 100) -> dict[str, Any]:
        return {
            "reports": [{"dataset_drift": False}] * (min(self.served, self.clean_predictions) // WINDOW_ROWS)
        }

    def list_alerts(self, model: str | None = None, page_size: int = 100) -> dict[str, Any]:
        if self.served <= self.clean_predictions + 200:
            return {"alerts": []}
        features = [
            {
                "feature": "income",
                "method": "wasserstein",
                "statistic": 0.5581,
                "threshold": 0.1,
                "drifted": True,
            },
            {
                "feature": "age",
                "method": "wasserstein",
                "statistic": 0.01,
                "threshold": 0.1,
                "drifted": False,
            },
            {
                "feature": "region",
                "method": "jensenshannon",
                "statistic": 0.28,
                "threshold": 0.1,
                "drifted": True,
            },
        ]
        alert = {"version": 1, "window_rows": 500, "features": features}
        return {"alerts": [{"severity": "critical", "alert": alert}]}

    def predict(self, model: str, instances: list[dict[str, Any]]) -> tuple[list[Any], int]:
        assert self.production is not None
        self.served += len(instances)
        return [0] * len(instances), self.production


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        self.now += 0.01
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def story(platform: FakePlatform, predictions: int = 1000) -> tuple[str, Exception | None]:
    out, clock = io.StringIO(), FakeClock()
    timeline = Timeline(out, clock=clock, sleep=clock.sleep)
    services = Services(platform, platform, platform, platform)
    try:
        tell_story(services, DemoOptions("credit-risk-demo-x", predictions, timeout=5), timeline)
    except DemoFailure as error:
        return out.getvalue(), error
    return out.getvalue(), None


def test_the_story_prints_each_step_with_its_seconds() -> None:
    platform = FakePlatform(clean_predictions=1000)
    output, failure = story(platform)
    assert failure is None, output
    lines = output.splitlines()
    expected = [
        "data uploaded: 6000 synthetic loan applicants for v1, and 6000 newer ones kept for the retrain",
        "v1 training job job-1 submitted (logistic regression, target `default`)",
        "v1 trained and registered as version 1: roc_auc 0.701, accuracy 0.650, f1 0.600",
        "v1 promoted to production (first version: no champion to beat)",
        "monitor watching: a window every 500 predictions; on drift, retrain on the newer data",
        "1000 predictions served by v1 in ",
        "monitor: 2 window(s) of clean traffic judged, no drift",
        "input distribution shifted: newer applicants, poorer, older, more indebted, mostly from the west",
        "1000 shifted predictions served by v1",
        "drift detected ",
        "drifted: income (wasserstein 0.558 > 0.100), region (jensenshannon 0.280 > 0.100)",
        "retrain requested by the monitor: training job job-2 on the newer data",
        "v2 trained on the newer data and registered: roc_auc 0.748, accuracy 0.650, f1 0.600",
        "gate: v2 roc_auc 0.748 vs v1 roc_auc 0.614, on v2's holdout (margin 0) -> promoted",
        "v2 promoted to production",
        "serving answers from v2 (hot swap, no restart)",
    ]
    assert len(lines) == len(expected), output
    for line, text in zip(lines, expected, strict=True):
        assert line[:11].strip().endswith(" s") or line.startswith(" " * 11), line
        assert line[11:].startswith(text), (line, text)
    assert "(critical, window of 500 predictions by v1)" in output
    assert "predictions/s, 50 per request)" in output
    assert platform.policy["retrain"]["dataset_uri"] == "s3://flywheel/datasets/credit-risk-newer.csv"
    seconds = [float(line[:7]) for line in lines if line[:7].strip()]
    assert seconds == sorted(seconds)


def test_a_gate_that_keeps_v1_is_a_failure_with_both_figures() -> None:
    output, failure = story(FakePlatform(clean_predictions=1000, v2_wins=False))
    assert (
        "gate: v2 roc_auc 0.748 vs v1 roc_auc 0.614, on v2's holdout (margin 0) -> kept the champion"
        in output
    )
    assert isinstance(failure, DemoFailure)
    assert "the gate kept v1" in str(failure)


def test_a_step_that_never_happens_fails_after_the_timeout() -> None:
    platform = FakePlatform(clean_predictions=1000)
    platform.list_alerts = lambda model=None, page_size=100: {"alerts": []}  # type: ignore[method-assign]
    output, failure = story(platform)
    assert str(failure) == "drift detected did not happen within 5 s"
    assert "1000 shifted predictions served by v1" in output


def test_formatting() -> None:
    assert format_metrics({"log_loss": 0.5, "roc_auc": 0.81234}) == "roc_auc 0.812"
    assert format_metrics({"r2": 0.5, "mae": 1.0}) == "mae 1.000, r2 0.500"
    assert format_drifted_features({"features": []}) == ""
    first = {"metric": "roc_auc", "challenger": 0.7, "champion": None, "champion_version": None}
    first |= {"margin": 0.0, "promoted": True}
    assert (
        format_gate(first, 1)
        == "gate: v1 roc_auc 0.700 vs no champion to beat, on v1's holdout (margin 0) -> promoted"
    )
    assert default_model_name(0).startswith("credit-risk-demo-19")


@pytest.mark.parametrize("predictions", [1, 499])
def test_fewer_predictions_than_a_window_skip_the_clean_verdict(predictions: int) -> None:
    output, failure = story(FakePlatform(clean_predictions=predictions), predictions)
    assert failure is None, output
    assert "clean traffic judged" not in output
    assert f"{predictions} predictions served by v1" in output
