"""How far a closed window of traffic has drifted from its model version's reference.

Each feature is compared with the method Evidently's default rule picks, unless the model's `DriftConfig`
sets one (for every numeric or categorical feature, or per feature):

- at most 1,000 reference values: Kolmogorov-Smirnov for numeric features with more than 5 distinct
  values, else chi-square, or the two-proportion Z test for 2 values; drift at p < 0.05 (KS: p <= 0.05);
- more: Wasserstein distance normed by the reference std for numeric features with more than 5 distinct
  values, else Jensen-Shannon distance; drift at >= 0.1;
- PSI on request (drift at >= 0.1); the dataset drifts when at least half of the features do.

What each method compares: KS and Wasserstein the reference profile's sample with the window's reservoir;
the others counts, per value for features with few distinct values (as Evidently does), per category for
categorical ones, else on the profile's histogram bins plus the two open-ended ones. The window's data
quality (missing values, values outside the training range, unseen categories) and the drift of the
model's predictions against the profile's output distribution come in the same report.

Per model version the service reads the reference once (`Reference.from_profile`), checks the model's
config against it (`check_config`) and keeps `TumblingWindows(model, version, reference, config.window)`;
each window that `add_event` (per prediction-logged event) or `close_if_due` (on a timer) returns is
judged by `evaluate(window, config)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.monitor import statistics
from services.monitor.reference import (
    CategoricalReference,
    FeatureReference,
    NumericReference,
    Reference,
    bin_indices,
)
from services.monitor.windows import (
    CategoricalFeatureWindow,
    FeatureWindow,
    NumericFeatureWindow,
    Window,
    WindowSettings,
)
from shared.events import FeatureDrift

SMALL_REFERENCE_ROWS = 1000  # Evidently's rule: tests up to this many reference values, distances above
FEW_VALUES = 5  # numeric features with at most this many distinct values are compared value by value
BINARY = 2
NEW_CATEGORIES_BEYOND_THE_LIMIT = "__new_other__"


class DriftMethod(StrEnum):
    """The statistics, named as Evidently names them."""

    KS = "ks"
    WASSERSTEIN = "wasserstein"
    PSI = "psi"
    CHI_SQUARE = "chisquare"
    JENSEN_SHANNON = "jensenshannon"
    Z = "z"


DEFAULT_THRESHOLDS: dict[DriftMethod, float] = {
    DriftMethod.KS: 0.05,
    DriftMethod.CHI_SQUARE: 0.05,
    DriftMethod.Z: 0.05,
    DriftMethod.WASSERSTEIN: 0.1,
    DriftMethod.JENSEN_SHANNON: 0.1,
    DriftMethod.PSI: 0.1,
}
P_VALUE_METHODS = frozenset({DriftMethod.KS, DriftMethod.CHI_SQUARE, DriftMethod.Z})
SAMPLE_METHODS = frozenset({DriftMethod.KS, DriftMethod.WASSERSTEIN})  # numeric only


class DriftConfigError(ValueError):
    """A model's drift configuration does not fit its reference (an unknown feature, a method that
    cannot compare a feature of that kind)."""


class MethodChoice(BaseModel):
    """The method and threshold for one feature (or the prediction); unset means the default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: DriftMethod | None = None
    threshold: float | None = Field(default=None, ge=0)


class DriftConfig(BaseModel):
    """How one model's windows are cut and judged. Everything defaults to Evidently's behaviour."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    numeric_method: DriftMethod | None = Field(default=None, description="for every numeric feature")
    categorical_method: DriftMethod | None = Field(default=None, description="for every categorical feature")
    thresholds: dict[DriftMethod, float] = Field(
        default_factory=dict, description='per method, over the defaults, e.g. {"psi": 0.2}'
    )
    features: dict[str, MethodChoice] = Field(default_factory=dict, description="per feature, over the rest")
    prediction: MethodChoice = Field(default_factory=MethodChoice, description="for the model's predictions")
    dataset_drift_share: float = Field(default=0.5, gt=0, le=1, description="share of drifted features")
    missing_rate_increase: float = Field(
        default=0.1, ge=0, description="a quality issue: the missing rate up by more than this (absolute)"
    )
    out_of_range_share: float = Field(
        default=0.05, ge=0, description="a quality issue: more than this share outside the training range"
    )
    unseen_category_share: float = Field(
        default=0.01, ge=0, description="a quality issue: more than this share of unseen categories"
    )
    window: WindowSettings = Field(default_factory=WindowSettings)

    @model_validator(mode="after")
    def _categorical_methods_compare_counts(self) -> Self:
        if self.categorical_method in SAMPLE_METHODS:
            raise ValueError(f"{self.categorical_method} compares numbers; categorical features need counts")
        return self


class DataQuality(BaseModel):
    """One feature's data quality over a window."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rows: int
    missing: int
    missing_rate: float
    reference_missing_rate: float
    out_of_range: int | None = Field(default=None, description="numeric: values outside the training range")
    out_of_range_share: float | None = None
    unseen: int | None = Field(default=None, description="categorical: values of categories never trained on")
    unseen_share: float | None = None
    unseen_categories: list[str] = Field(default_factory=list, description="the most frequent, at most 10")
    issues: list[str] = Field(default_factory=list, description="what crossed the configured limits")


class FeatureReport(BaseModel):
    """One feature over a window: its drift (None when it had no values to compare) and data quality."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    feature: str
    kind: Literal["numeric", "categorical"]
    drift: FeatureDrift | None
    compared_on: Literal["sample", "values", "categories", "bins"] | None = Field(
        description="the reference sample and the window's; counts per value, per category or per bin"
    )
    quality: DataQuality


class WindowReport(BaseModel):
    """What a closed window says about a model version: the `drift-detected` material and more."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    version: int
    window_start: datetime
    window_end: datetime
    rows: int
    features: list[FeatureReport]
    prediction_drift: FeatureDrift | None
    drifted_features: int
    compared_features: int
    drift_share: float
    dataset_drift: bool
    quality_issues: bool

    def feature_drifts(self) -> list[FeatureDrift]:
        """The per-feature verdicts, as `DriftDetected.features` carries them."""
        return [feature.drift for feature in self.features if feature.drift is not None]


def default_method(
    kind: Literal["numeric", "categorical"], reference_rows: int, distinct_values: int | None
) -> DriftMethod:
    """Evidently's rule. `distinct_values` counts the values of reference and window together (None:
    more than a few)."""
    few = distinct_values is not None and distinct_values <= FEW_VALUES
    if kind == "numeric" and not few:
        return DriftMethod.KS if reference_rows <= SMALL_REFERENCE_ROWS else DriftMethod.WASSERSTEIN
    if reference_rows > SMALL_REFERENCE_ROWS:
        return DriftMethod.JENSEN_SHANNON
    return (
        DriftMethod.Z if distinct_values is not None and distinct_values <= BINARY else DriftMethod.CHI_SQUARE
    )


def check_config(config: DriftConfig, reference: Reference) -> None:
    """Raise DriftConfigError, listing every problem, when `config` cannot judge `reference`'s features:
    call it when a model's config is set and when a version's reference is loaded."""
    problems = [
        f"no feature {name!r} in the reference" for name in config.features if name not in reference.features
    ]
    for name, feature in reference.features.items():
        choice = config.features.get(name)
        method = choice.method if choice and choice.method else _kind_method(config, feature)
        problems += _inapplicable(name, method, feature)
    if reference.output is not None:
        problems += _inapplicable("the prediction", config.prediction.method, reference.output)
    if problems:
        raise DriftConfigError("; ".join(problems))


def evaluate(window: Window, config: DriftConfig) -> WindowReport:
    """Judge a closed window against the reference it was cut for."""
    features = [
        _feature_report(name, feature_window, config.features.get(name, MethodChoice()), config)
        for name, feature_window in window.features.items()
    ]
    verdicts = [feature.drift.drifted for feature in features if feature.drift is not None]
    share = sum(verdicts) / len(verdicts) if verdicts else 0.0
    prediction = None
    if window.prediction is not None:
        prediction, _ = _drift(window.prediction_output, window.prediction, config.prediction, config)
    return WindowReport(
        model=window.model,
        version=window.version,
        window_start=window.opened_at,
        window_end=window.closed_at or window.last_row_at,
        rows=window.rows,
        features=features,
        prediction_drift=prediction,
        drifted_features=sum(verdicts),
        compared_features=len(verdicts),
        drift_share=share,
        dataset_drift=bool(verdicts) and share >= config.dataset_drift_share,
        quality_issues=any(feature.quality.issues for feature in features),
    )


def is_drift(method: DriftMethod, statistic: float, threshold: float) -> bool:
    """The verdict, as Evidently gives it: KS at p <= threshold, the other tests at p < threshold, the
    distances at >= threshold; never on NaN."""
    if math.isnan(statistic):
        return False
    if method is DriftMethod.KS:
        return statistic <= threshold
    if method in P_VALUE_METHODS:
        return statistic < threshold
    return statistic >= threshold


@dataclass(frozen=True)
class _Counts:
    """Reference and window counts on the same keys (values, categories or bins), for the count methods."""

    reference: np.ndarray
    current: np.ndarray
    basis: Literal["values", "categories", "bins"]
    distinct_values: int | None  # when the keys are the values themselves


def _feature_report(
    name: str, window: FeatureWindow, choice: MethodChoice, config: DriftConfig
) -> FeatureReport:
    drift, basis = _drift(name, window, choice, config)
    return FeatureReport(
        feature=name, kind=window.kind, drift=drift, compared_on=basis, quality=_quality(window, config)
    )


def _drift(
    name: str, window: FeatureWindow, choice: MethodChoice, config: DriftConfig
) -> tuple[FeatureDrift | None, Literal["sample", "values", "categories", "bins"] | None]:
    reference = window.reference
    if window.present == 0 or reference.count == 0:
        return None, None
    counts = _counts(window)
    method = choice.method or _kind_method(config, reference)
    if method is None:
        method = default_method(reference.kind, reference.count, counts.distinct_values)
        if method in SAMPLE_METHODS and not _has_sample(window):
            method = DriftMethod.PSI  # a regressor's output has a histogram in the profile, no sample
    if problems := _inapplicable(name, method, reference):
        raise DriftConfigError("; ".join(problems))
    threshold = choice.threshold if choice.threshold is not None else _threshold(method, config)
    statistic = _statistic(method, window, counts)
    drift = FeatureDrift(
        feature=name,
        method=method.value,
        statistic=statistic,
        threshold=threshold,
        drifted=is_drift(method, statistic, threshold),
        p_value=statistic if method in P_VALUE_METHODS else None,
    )
    return drift, "sample" if method in SAMPLE_METHODS else counts.basis


def _kind_method(config: DriftConfig, reference: FeatureReference) -> DriftMethod | None:
    return config.numeric_method if reference.kind == "numeric" else config.categorical_method


def _threshold(method: DriftMethod, config: DriftConfig) -> float:
    return config.thresholds.get(method, DEFAULT_THRESHOLDS[method])


def _inapplicable(name: str, method: DriftMethod | None, reference: FeatureReference) -> list[str]:
    if method not in SAMPLE_METHODS:
        return []
    if isinstance(reference, CategoricalReference):
        return [f"{method} cannot compare {name}: it is categorical (use chisquare, z, jensenshannon or psi)"]
    if reference.sample.size == 0 and reference.count > 0:
        return [
            f"{method} cannot compare {name}: the profile keeps no sample of it (use psi or jensenshannon)"
        ]
    return []


def _has_sample(window: FeatureWindow) -> bool:
    return isinstance(window, NumericFeatureWindow) and window.reference.sample.size > 0


def _statistic(method: DriftMethod, window: FeatureWindow, counts: _Counts) -> float:
    if method in SAMPLE_METHODS:
        assert isinstance(window, NumericFeatureWindow)
        reference = window.reference
        if method is DriftMethod.KS:
            return statistics.ks_p_value(reference.sample, window.sample.values)
        current = window.sample.values
        return statistics.wasserstein_normed(
            reference.sample,
            current,
            reference.std,
            statistics.stratum_weights(reference.sample_bins, reference.bin_counts),
            statistics.stratum_weights(bin_indices(reference.edges, current), window.bin_counts),
        )
    tests = {
        DriftMethod.PSI: statistics.psi,
        DriftMethod.CHI_SQUARE: statistics.chi_square_p_value,
        DriftMethod.JENSEN_SHANNON: statistics.jensen_shannon_distance,
        DriftMethod.Z: statistics.z_test_p_value,
    }
    return tests[method](counts.reference, counts.current)


def _counts(window: FeatureWindow) -> _Counts:
    if isinstance(window, CategoricalFeatureWindow):
        return _category_counts(window)
    reference = window.reference
    values, value_counts = reference.discrete_values, reference.discrete_counts
    if values is not None and value_counts is not None and window.value_counts is not None:
        keys = np.union1d(values, np.fromiter(window.value_counts, dtype=np.float64))
        known = dict(zip(values.tolist(), value_counts.tolist(), strict=True))
        return _Counts(
            reference=np.array([known.get(key, 0) for key in keys.tolist()], dtype=np.int64),
            current=np.array([window.value_counts.get(key, 0) for key in keys.tolist()], dtype=np.int64),
            basis="values",
            distinct_values=int(keys.size),
        )
    return _Counts(reference.bin_counts, window.bin_counts, basis="bins", distinct_values=None)


def _category_counts(window: CategoricalFeatureWindow) -> _Counts:
    reference = window.reference
    counts = {
        category: (int(count), 0)
        for category, count in zip(reference.categories, reference.counts, strict=True)
    }
    for category, count in zip(reference.categories, window.counts.tolist(), strict=True):
        counts[category] = (counts[category][0], count)
    for category, count in window.new_categories.items():
        counts[category] = (0, count)
    if window.other_new:
        counts[NEW_CATEGORIES_BEYOND_THE_LIMIT] = (0, window.other_new)
    keys = sorted(counts)  # Evidently orders the values so (the Z test compares the first with the rest)
    present = [key for key in keys if counts[key] != (0, 0)]
    return _Counts(
        reference=np.array([counts[key][0] for key in present], dtype=np.int64),
        current=np.array([counts[key][1] for key in present], dtype=np.int64),
        basis="categories",
        distinct_values=reference.distinct + len(window.new_categories) + (1 if window.other_new else 0),
    )


def _quality(window: FeatureWindow, config: DriftConfig) -> DataQuality:
    reference = window.reference
    missing_rate = window.missing / window.rows if window.rows else 0.0
    issues = []
    if missing_rate - reference.missing_rate > config.missing_rate_increase:
        issues.append(
            f"missing in {missing_rate:.1%} of rows, up from {reference.missing_rate:.1%} in training"
        )
    quality = DataQuality(
        rows=window.rows,
        missing=window.missing,
        missing_rate=missing_rate,
        reference_missing_rate=reference.missing_rate,
    )
    if (
        isinstance(window, NumericFeatureWindow)
        and isinstance(reference, NumericReference)
        and reference.profiled
    ):
        share = window.out_of_range / window.present if window.present else 0.0
        if share > config.out_of_range_share:
            issues.append(
                f"{share:.1%} of values outside the training range "
                f"[{reference.edges[0]:.6g}, {reference.edges[-1]:.6g}]"
            )
        return quality.model_copy(
            update={"out_of_range": window.out_of_range, "out_of_range_share": share, "issues": issues}
        )
    if isinstance(window, CategoricalFeatureWindow):
        share = window.unseen / window.present if window.present else 0.0
        names = [category for category, _ in window.new_categories.most_common(10)]
        if share > config.unseen_category_share:
            issues.append(
                f"{share:.1%} of values in categories never trained on: {', '.join(map(repr, names))}"
            )
        return quality.model_copy(
            update={
                "unseen": window.unseen,
                "unseen_share": share,
                "unseen_categories": names,
                "issues": issues,
            }
        )
    return quality.model_copy(update={"issues": issues})
