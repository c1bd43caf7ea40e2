"""Windows of unshifted traffic rarely drift and never as a dataset; shifted means, spreads, new categories
and predictions are caught within the window, and missing values and out-of-range values are reported as
data quality issues."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from services.monitor.drift import DriftConfig, WindowReport, evaluate
from services.monitor.reference import Reference
from services.monitor.windows import TumblingWindows, WindowSettings
from shared.events import DriftDetected, Severity
from tests.monitor_data import FEATURES, NUMERIC, columns_of, profile_of, traffic

NOON = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def reports(
    reference_rows: int, window_rows: int, windows: int, seed: int = 11, **shift: float
) -> list[WindowReport]:
    reference = Reference.from_profile(profile_of(traffic(reference_rows, seed=1)))
    config = DriftConfig(window=WindowSettings(max_rows=window_rows, max_seconds=None))
    stream = TumblingWindows("credit-risk", 1, reference, config.window, seed=3)
    closed = stream.add(columns_of(traffic(window_rows * windows, seed=seed, **shift)), {}, NOON)
    return [evaluate(window, config) for window in closed]


def drifted(report: WindowReport) -> set[str]:
    return {
        feature.feature for feature in report.features if feature.drift is not None and feature.drift.drifted
    }


@pytest.mark.parametrize(("reference_rows", "window_rows"), [(1000, 1000), (20_000, 10_000)])
def test_unshifted_traffic_rarely_drifts_and_never_as_a_dataset(
    reference_rows: int, window_rows: int
) -> None:
    windows = reports(reference_rows, window_rows, windows=40)
    false_alarms = sum(len(drifted(report)) for report in windows) / (len(windows) * len(FEATURES))
    assert not any(report.dataset_drift for report in windows)
    assert false_alarms <= 0.1
    assert not any(report.quality_issues for report in windows)


@pytest.mark.parametrize("reference_rows", [1000, 20_000])
def test_a_mean_shift_drifts_every_feature_in_the_first_window(reference_rows: int) -> None:
    (report,) = reports(reference_rows, 2000, windows=1, mean_shift=0.5)
    assert drifted(report) == set(FEATURES)
    assert report.dataset_drift
    assert report.drift_share == 1.0


@pytest.mark.parametrize("reference_rows", [1000, 20_000])
def test_a_variance_shift_drifts_the_numeric_features(reference_rows: int) -> None:
    (report,) = reports(reference_rows, 2000, windows=1, scale=1.5)
    assert drifted(report) >= set(NUMERIC)
    assert report.dataset_drift


@pytest.mark.parametrize("reference_rows", [1000, 20_000])
def test_new_categories_drift_their_feature_and_are_named(reference_rows: int) -> None:
    (report,) = reports(reference_rows, 2000, windows=1, new_region_share=0.2)
    region = next(feature for feature in report.features if feature.feature == "region")
    assert "region" in drifted(report)
    assert not report.dataset_drift
    assert sorted(region.quality.unseen_categories) == ["mars", "venus"]
    assert region.quality.unseen_share == pytest.approx(0.2, abs=0.03)
    assert region.quality.issues
    assert report.quality_issues


def test_missing_values_are_a_quality_issue_of_each_feature() -> None:
    (report,) = reports(20_000, 2000, windows=1, missing_share=0.3)
    for feature in report.features:
        assert feature.quality.missing_rate == pytest.approx(0.3, abs=0.03)
        assert feature.quality.issues == [
            f"missing in {feature.quality.missing_rate:.1%} of rows, up from 0.0% in training"
        ]
    assert not report.dataset_drift  # the values present are distributed as before, as Evidently sees it too


def test_values_outside_the_training_range_are_a_quality_issue() -> None:
    (report,) = reports(1000, 2000, windows=1, scale=3.0)
    income = next(feature for feature in report.features if feature.feature == "income")
    assert income.quality.out_of_range_share is not None
    assert income.quality.out_of_range_share > 0.2
    assert "outside the training range" in income.quality.issues[0]


def test_a_feature_absent_from_the_traffic_is_missing_and_left_out_of_the_dataset_share() -> None:
    reference = Reference.from_profile(profile_of(traffic(1000, seed=1)))
    config = DriftConfig(window=WindowSettings(max_rows=500))
    columns = columns_of(traffic(500, seed=2))
    del columns["skewed"]
    (window,) = TumblingWindows("credit-risk", 1, reference, config.window).add(columns, {}, NOON)
    report = evaluate(window, config)
    skewed = next(feature for feature in report.features if feature.feature == "skewed")
    assert skewed.drift is None
    assert skewed.quality.missing_rate == 1.0
    assert report.compared_features == len(FEATURES) - 1


def test_predictions_drift_when_the_predicted_classes_shares_move() -> None:
    reference = Reference.from_profile(profile_of(traffic(5000, seed=1)))  # about 30% predicted positive
    config = DriftConfig(window=WindowSettings(max_rows=2000))
    rng = np.random.default_rng(9)
    for positive_share, drifts in [(0.3, False), (0.6, True)]:
        labels = (rng.random(2000) < positive_share).astype(np.int64)
        stream = TumblingWindows("credit-risk", 1, reference, config.window)
        (window,) = stream.add(columns_of(traffic(2000, seed=2)), {"label": labels}, NOON)
        prediction = evaluate(window, config).prediction_drift
        assert prediction is not None
        assert (prediction.feature, prediction.method, prediction.drifted) == (
            "label",
            "jensenshannon",
            drifts,
        )


def test_a_report_carries_what_a_drift_detected_event_needs() -> None:
    (report,) = reports(1000, 2000, windows=1, mean_shift=0.5)
    event = DriftDetected(
        model=report.model,
        version=report.version,
        window_start=report.window_start,
        window_end=report.window_end,
        window_rows=report.rows,
        severity=Severity.CRITICAL,
        dataset_drift=report.dataset_drift,
        features=report.feature_drifts(),
        prediction_drift=report.prediction_drift,
    )
    assert [feature.feature for feature in event.features] == FEATURES
    assert WindowReport.model_validate_json(report.model_dump_json()) == report
