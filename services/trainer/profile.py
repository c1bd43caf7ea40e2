"""The reference profile of a model's training data, and checking new data against it.

The monitor compares production traffic with the profile (PSI on the histograms and category
frequencies, KS and Wasserstein on the sample, chi-square and Jensen-Shannon on categories), and a
retraining job checks its new data against the production model's profile before it trains.

Schema ("profile_version": 1), strict JSON (no NaN). Features are described as `prepare_features`
makes them: a missing category is the string "missing" (counted in `missing_rate`, not in the
frequencies); a missing number is left out of every statistic, and is null in the sample.

    {"profile_version": 1, "row_count": int, "task": "classification" | "regression",
     "target": str, "missing_category": "missing",
     "features": {column: numeric or categorical summary},
     "target_distribution": categorical summary of every class, or numeric summary,
     "output_distribution": the distribution of the predictions given to `reference_profile`,
     "sample": {"rows": int, "seed": int, "columns": {column: [value or null, ...]}}}

numeric summary: {"kind": "numeric", "count": present values, "missing_rate": float,
    "min", "max", "mean", "std" (population): float, or null when every value is missing,
    "quantiles": {"0": v, "0.01": v, ..., "1": v} ({} when every value is missing),
    "histogram": {"bin_edges": [...], "counts": [...]} or null}: 10 quantile bins, equal edges merged
    (a constant column has one bin [v, v]); the last bin includes its right edge, and values outside
    [first edge, last edge] fall in no bin, so the monitor must add open-ended bins of its own.
categorical summary: {"kind": "categorical", "count", "missing_rate", "distinct": int,
    "frequencies": {category: share of present values}}: the 50 most frequent categories, the rest
    summed under "__other__" (every class, for the target).
output_distribution: classification: {"kind": "classification", "predicted_classes": {label: share},
    "positive_class": label or null, "probability_histograms": {label: histogram on [0, 1] in 10 bins}}
    (the positive class only for two classes, every class otherwise); regression: a numeric summary.
Class labels are written as strings (str(label)).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from services.trainer.dataset import (
    MISSING_CATEGORY,
    categorical_columns_of,
    prepare_column,
    prepare_features,
)
from services.trainer.spec import TrainingSpec

PROFILE_VERSION = 1
QUANTILES = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)
HISTOGRAM_BINS = 10
MAX_CATEGORIES = 50
OTHER_CATEGORY = "__other__"
MAX_SAMPLE_ROWS = 1000
# check_against_profile: a numeric column is out of range when more than this share of its values lies
# outside the training [min - std, max + std] (the std allows for values just beyond the extremes seen);
# a missing rate rising by more than this much (absolute) is a jump.
OUT_OF_RANGE_SHARE = 0.5
MISSING_RATE_JUMP = 0.2


def reference_profile(
    frame: pd.DataFrame, spec: TrainingSpec, predictions: np.ndarray, probabilities: np.ndarray | None
) -> dict[str, Any]:
    """Profile the training table and the model's outputs on it (schema in the module docstring)."""
    features = prepare_features(frame, spec)
    categorical = set(categorical_columns_of(features, spec))
    target = frame[spec.target]
    sample = features.sample(n=min(MAX_SAMPLE_ROWS, len(features)), random_state=spec.seed)
    return {
        "profile_version": PROFILE_VERSION,
        "row_count": len(frame),
        "task": spec.task,
        "target": spec.target,
        "missing_category": MISSING_CATEGORY,
        "features": {
            column: _categorical_summary(features[column], missing=features[column] == MISSING_CATEGORY)
            if column in categorical
            else _numeric_summary(features[column].to_numpy(dtype=np.float64))
            for column in features.columns
        },
        "target_distribution": _numeric_summary(target.to_numpy(dtype=np.float64))
        if spec.task == "regression"
        else _categorical_summary(target.astype(str), missing=target.isna(), limit=None),
        "output_distribution": _output_distribution(
            spec, np.unique(target.dropna()), predictions, probabilities
        ),
        "sample": {
            "rows": len(sample),
            "seed": spec.seed,
            "columns": {
                column: [
                    value if column in categorical else _json_number(value)
                    for value in sample[column].tolist()
                ]
                for column in sample.columns
            },
        },
    }


def _numeric_summary(values: np.ndarray) -> dict[str, Any]:
    present = values[~np.isnan(values)]
    summary: dict[str, Any] = {
        "kind": "numeric",
        "count": int(present.size),
        "missing_rate": _share(values.size - present.size, values.size),
    }
    if present.size == 0:
        return summary | {
            "min": None,
            "max": None,
            "mean": None,
            "std": None,
            "quantiles": {},
            "histogram": None,
        }
    edges = np.unique(np.quantile(present, np.linspace(0, 1, HISTOGRAM_BINS + 1)))
    if edges.size == 1:  # a constant column: one bin of zero width
        edges = np.array([edges[0], edges[0]])
    counts, _ = np.histogram(present, bins=edges)
    return summary | {
        "min": float(present.min()),
        "max": float(present.max()),
        "mean": float(present.mean()),
        "std": float(present.std()),
        "quantiles": {
            f"{q:g}": float(v) for q, v in zip(QUANTILES, np.quantile(present, QUANTILES), strict=True)
        },
        "histogram": {
            "bin_edges": [float(edge) for edge in edges],
            "counts": [int(count) for count in counts],
        },
    }


def _categorical_summary(
    values: pd.Series, missing: pd.Series, limit: int | None = MAX_CATEGORIES
) -> dict[str, Any]:
    present = values[~missing.to_numpy()]
    counts = present.value_counts()
    kept = counts if limit is None else counts.head(limit)
    frequencies = {str(category): _share(int(count), len(present)) for category, count in kept.items()}
    if len(kept) < len(counts):
        frequencies[OTHER_CATEGORY] = _share(int(counts.iloc[len(kept) :].sum()), len(present))
    return {
        "kind": "categorical",
        "count": len(present),
        "missing_rate": _share(len(values) - len(present), len(values)),
        "distinct": len(counts),
        "frequencies": frequencies,
    }


def _output_distribution(
    spec: TrainingSpec, classes: np.ndarray, predictions: np.ndarray, probabilities: np.ndarray | None
) -> dict[str, Any]:
    if spec.task == "regression":
        return _numeric_summary(np.asarray(predictions, dtype=np.float64))
    if probabilities is None:
        raise ValueError("a classifier's profile needs its class probabilities")
    labels = pd.Series(predictions).astype(str)
    # Two classes: the positive class's probability says it all; more: one histogram per class.
    profiled = [1] if len(classes) == 2 else list(range(len(classes)))
    edges = np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1)
    return {
        "kind": "classification",
        "predicted_classes": {
            str(label): _share(int(count), len(labels)) for label, count in labels.value_counts().items()
        },
        "positive_class": str(classes[1]) if len(classes) == 2 else None,
        "probability_histograms": {
            str(classes[index]): {
                "bin_edges": [float(edge) for edge in edges],
                "counts": [int(count) for count in np.histogram(probabilities[:, index], bins=edges)[0]],
            }
            for index in profiled
        },
    }


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _json_number(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def check_against_profile(frame: pd.DataFrame, profile: dict[str, Any], spec: TrainingSpec) -> list[str]:
    """Every way `frame` departs from the data the profiled model was trained on, each a sentence.

    Checked: profiled feature columns missing (unless the spec's feature_columns leave them out); a
    column's kind (numeric or categorical) changed; a numeric column mostly out of the training range
    (more than OUT_OF_RANGE_SHARE of its values outside the training [min, max] widened by one training
    std on each side); a missing rate risen by more than MISSING_RATE_JUMP; for classification, a class
    of the training data absent or a class it never had.
    """
    profiled: dict[str, Any] = profile["features"]
    expected = [
        column for column in profiled if spec.feature_columns is None or column in spec.feature_columns
    ]
    absent = [column for column in expected if column not in frame.columns]
    problems = (
        [f"columns the production model was trained on are missing: {', '.join(map(repr, absent))}"]
        if absent
        else []
    )
    categorical = set(categorical_columns_of(frame, spec))
    for column in (column for column in expected if column in frame.columns):
        is_categorical = column in categorical
        values = prepare_column(frame[column], is_categorical)
        problems += _column_problems(column, values, is_categorical, profiled[column])
    if spec.task == "classification" and spec.target in frame.columns:
        problems += _class_problems(frame[spec.target], profile["target_distribution"])
    return problems


def _column_problems(
    column: str, values: pd.Series, categorical: bool, reference: dict[str, Any]
) -> list[str]:
    kind = "categorical" if categorical else "numeric"
    if kind != reference["kind"]:
        return [f"column {column!r} was {reference['kind']} in the training data and is {kind} now"]
    problems: list[str] = []
    missing = values == MISSING_CATEGORY if categorical else values.isna()
    missing_rate = _share(int(missing.sum()), len(values))
    if missing_rate - reference["missing_rate"] > MISSING_RATE_JUMP:
        problems.append(
            f"column {column!r} is missing in {missing_rate:.0%} of rows, "
            f"up from {reference['missing_rate']:.0%}"
        )
    if not categorical and reference["min"] is not None:
        present = values.dropna().to_numpy(dtype=np.float64)
        low, high = reference["min"] - reference["std"], reference["max"] + reference["std"]
        outside = _share(int(((present < low) | (present > high)).sum()), present.size)
        if outside > OUT_OF_RANGE_SHARE:
            problems.append(
                f"column {column!r} has {outside:.0%} of its values outside the training range "
                f"[{reference['min']:.4g}, {reference['max']:.4g}] "
                f"widened by one std ({reference['std']:.4g})"
            )
    return problems


def _class_problems(target: pd.Series, reference: dict[str, Any]) -> list[str]:
    trained = set(reference["frequencies"])
    current = set(target.dropna().astype(str))
    problems = []
    if trained - current:
        problems.append(f"classes of the training data absent from the new data: {sorted(trained - current)}")
    if current - trained:
        problems.append(f"classes the production model never saw: {sorted(current - trained)}")
    return problems
