"""The drift method follows Evidently's default rule unless the model's config says otherwise, per kind of
feature or per feature, and each method's verdict is taken Evidently's way."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from services.monitor.drift import (
    DriftConfig,
    DriftConfigError,
    DriftMethod,
    MethodChoice,
    WindowReport,
    check_config,
    default_method,
    evaluate,
    is_drift,
)
from services.monitor.reference import Reference
from services.monitor.windows import TumblingWindows, WindowSettings
from tests.monitor_data import columns_of, profile_of, traffic

NOON = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("kind", "reference_rows", "distinct", "method"),
    [
        ("numeric", 1000, None, DriftMethod.KS),
        ("numeric", 1000, 6, DriftMethod.KS),
        ("numeric", 1000, 5, DriftMethod.CHI_SQUARE),
        ("numeric", 1000, 2, DriftMethod.Z),
        ("categorical", 1000, 3, DriftMethod.CHI_SQUARE),
        ("categorical", 1000, 2, DriftMethod.Z),
        ("numeric", 1001, None, DriftMethod.WASSERSTEIN),
        ("numeric", 1001, 5, DriftMethod.JENSEN_SHANNON),
        ("categorical", 1001, 2, DriftMethod.JENSEN_SHANNON),
    ],
)
def test_the_default_method_is_evidentlys_rule(
    kind: str, reference_rows: int, distinct: int | None, method: DriftMethod
) -> None:
    assert default_method(kind, reference_rows, distinct) is method  # type: ignore[arg-type]


def test_verdicts_are_taken_as_evidently_takes_them() -> None:
    assert is_drift(DriftMethod.KS, 0.05, 0.05)  # KS: p <= threshold
    assert not is_drift(DriftMethod.CHI_SQUARE, 0.05, 0.05)
    assert is_drift(DriftMethod.Z, 0.049, 0.05)
    assert is_drift(DriftMethod.WASSERSTEIN, 0.1, 0.1)
    assert not is_drift(DriftMethod.PSI, 0.099, 0.1)
    assert not is_drift(DriftMethod.JENSEN_SHANNON, float("nan"), 0.1)


def report(reference_rows: int, config: DriftConfig, frame_seed: int = 7, **shift: float) -> WindowReport:
    frame = traffic(reference_rows, seed=1)
    frame["binary"] = np.random.default_rng(1).integers(0, 2, reference_rows).astype(float)
    frame["three"] = np.random.default_rng(2).integers(0, 3, reference_rows).astype(float)
    reference = Reference.from_profile(profile_of(frame))
    current = traffic(2000, seed=frame_seed, **shift)
    columns = columns_of(current) | {
        "binary": np.random.default_rng(3).integers(0, 2, 2000).astype(float),
        "three": np.random.default_rng(4).integers(0, 3, 2000).astype(float),
    }
    windows = TumblingWindows("credit-risk", 1, reference, config.window)
    (window,) = windows.add(columns, {"label": np.zeros(2000, dtype=int)}, NOON)
    return evaluate(window, config)


def methods(report: WindowReport) -> dict[str, tuple[str, str | None]]:
    return {
        feature.feature: (feature.drift.method, feature.compared_on)
        for feature in report.features
        if feature.drift is not None
    }


CONFIG = DriftConfig(window=WindowSettings(max_rows=2000))


def test_a_small_reference_gets_tests_and_a_large_one_distances() -> None:
    assert methods(report(800, CONFIG)) == {
        "income": ("ks", "sample"),
        "age": ("ks", "sample"),
        "skewed": ("ks", "sample"),
        "region": ("chisquare", "categories"),
        "owns_home": ("z", "categories"),
        "binary": ("z", "values"),
        "three": ("chisquare", "values"),
    }
    assert methods(report(5000, CONFIG)) == {
        "income": ("wasserstein", "sample"),
        "age": ("wasserstein", "sample"),
        "skewed": ("wasserstein", "sample"),
        "region": ("jensenshannon", "categories"),
        "owns_home": ("jensenshannon", "categories"),
        "binary": ("jensenshannon", "values"),
        "three": ("jensenshannon", "values"),
    }


def test_methods_and_thresholds_can_be_set_per_kind_per_method_and_per_feature() -> None:
    config = CONFIG.model_copy(
        update={
            "numeric_method": DriftMethod.PSI,
            "categorical_method": DriftMethod.PSI,
            "thresholds": {DriftMethod.PSI: 0.25},
            "features": {
                "income": MethodChoice(method=DriftMethod.KS, threshold=0.01),
                "region": MethodChoice(threshold=0.5),
            },
        }
    )
    drifts = {feature.feature: feature.drift for feature in report(5000, config).features}
    assert drifts["income"] is not None
    assert (drifts["income"].method, drifts["income"].threshold) == (
        "ks",
        0.01,
    )
    assert drifts["region"] is not None
    assert (drifts["region"].method, drifts["region"].threshold) == (
        "psi",
        0.5,
    )
    assert drifts["skewed"] is not None
    assert (drifts["skewed"].method, drifts["skewed"].threshold) == (
        "psi",
        0.25,
    )


def test_psi_compares_a_continuous_feature_on_the_profiles_bins_with_the_outer_ones() -> None:
    config = CONFIG.model_copy(update={"numeric_method": DriftMethod.PSI})
    income = next(feature for feature in report(5000, config).features if feature.feature == "income")
    assert income.compared_on == "bins"


def test_a_config_that_cannot_judge_the_reference_is_refused_with_every_reason() -> None:
    reference = Reference.from_profile(profile_of(traffic(500, seed=1)))
    config = DriftConfig(
        features={"region": MethodChoice(method=DriftMethod.KS), "nonexistent": MethodChoice(threshold=0.2)}
    )
    with pytest.raises(DriftConfigError, match="no feature 'nonexistent'") as refused:
        check_config(config, reference)
    assert "ks cannot compare region: it is categorical" in str(refused.value)
    check_config(DriftConfig(numeric_method=DriftMethod.WASSERSTEIN), reference)


def test_a_categorical_method_comparing_samples_is_refused() -> None:
    with pytest.raises(ValueError, match="categorical features need counts"):
        DriftConfig(categorical_method=DriftMethod.WASSERSTEIN)
