"""A model version's reference, read from the profile the trainer stored with it (`reference_profile.json`,
schema in `services/trainer/profile.py`), in the shapes the windows and the drift statistics need.

Numeric features keep the profile's histogram with an open-ended bin added on each side (values outside
the training range fall there), the sample's present values, and, when the sample holds few distinct
values, the count of each (Evidently compares such features value by value), read off the histogram
(and the mean) when they tell. Categorical features keep their categories' counts, rebuilt from the
profile's shares.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

OTHER_CATEGORY = "__other__"  # the profile's bucket for the categories beyond its 50 most frequent
# Evidently bins a numeric feature with at most this many distinct reference values value by value.
MAX_DISCRETE_VALUES = 20


class ProfileError(ValueError):
    """The profile cannot be read as a reference (an unknown version, a malformed feature)."""


@dataclass(frozen=True, eq=False)
class NumericReference:
    """A numeric feature (or a regressor's output) as the training data had it."""

    name: str
    count: int  # present values in the training data
    missing_rate: float
    std: float | None  # population std of the present values; None when every value was missing
    edges: np.ndarray  # the profile's bin edges (a constant feature has two equal edges)
    bin_counts: np.ndarray  # len(edges) + 1 bins: (-inf, first), the profile's bins, (last, +inf)
    sample: np.ndarray  # the present values of the profile's sample (empty for an output)
    sample_bins: np.ndarray  # the bin of each sample value
    discrete_values: np.ndarray | None  # sorted distinct sample values, when there are few of them
    discrete_counts: np.ndarray | None  # their counts in the data when the profile tells, else the sample's

    kind: Literal["numeric"] = "numeric"

    @property
    def profiled(self) -> bool:
        """Whether the training data had any value of it at all."""
        return self.edges.size > 0

    @property
    def distinct_values(self) -> int | None:
        """Distinct values in the reference sample when few (a lower bound for the whole reference)."""
        return None if self.discrete_values is None else int(self.discrete_values.size)


@dataclass(frozen=True, eq=False)
class CategoricalReference:
    """A categorical feature (or a classifier's predicted class) as the training data had it."""

    name: str
    count: int  # present values
    missing_rate: float
    distinct: int
    categories: tuple[str, ...]  # may end with OTHER_CATEGORY when there were more than the profile keeps
    counts: np.ndarray  # per category, in the order of `categories`

    kind: Literal["categorical"] = "categorical"

    @property
    def has_other(self) -> bool:
        return OTHER_CATEGORY in self.categories


FeatureReference = NumericReference | CategoricalReference


@dataclass(frozen=True, eq=False)
class Reference:
    """Everything the monitor compares a model version's traffic with."""

    row_count: int
    task: Literal["classification", "regression"]
    missing_category: str
    features: dict[str, FeatureReference]  # in the model's input order
    output: FeatureReference | None  # the predicted class (classification) or value (regression)

    @classmethod
    def from_profile(cls, profile: Mapping[str, Any]) -> Reference:
        """Read a `profile_version` 1 profile; ProfileError says what does not fit."""
        if profile.get("profile_version") != 1:
            raise ProfileError(f"unsupported profile_version {profile.get('profile_version')!r}; expected 1")
        sample_columns: Mapping[str, list[Any]] = profile.get("sample", {}).get("columns", {})
        features: dict[str, FeatureReference] = {}
        for name, summary in profile["features"].items():
            if summary.get("kind") == "numeric":
                features[name] = _numeric(name, summary, sample_columns.get(name, []))
            elif summary.get("kind") == "categorical":
                features[name] = _categorical(name, summary)
            else:
                raise ProfileError(
                    f"feature {name!r} has kind {summary.get('kind')!r}; expected numeric or categorical"
                )
        return cls(
            row_count=int(profile["row_count"]),
            task=profile["task"],
            missing_category=profile.get("missing_category", "missing"),
            features=features,
            output=_output(profile.get("output_distribution"), int(profile["row_count"])),
        )


def bin_indices(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Each value's bin among len(edges) + 1: 0 below the first edge, i for the profile's [edge i-1,
    edge i) (its last bin closed on the right), len(edges) above the last edge."""
    bins = np.searchsorted(edges, values, side="right")
    bins[values == edges[-1]] = edges.size - 1
    return bins


def _numeric(name: str, summary: Mapping[str, Any], sample: list[Any]) -> NumericReference:
    histogram = summary.get("histogram")
    edges = np.asarray(histogram["bin_edges"] if histogram else [], dtype=np.float64)
    inner = np.asarray(histogram["counts"] if histogram else [], dtype=np.int64)
    present = np.asarray([value for value in sample if value is not None], dtype=np.float64)
    distinct, counts = np.unique(present, return_counts=True)
    discrete = 0 < distinct.size <= MAX_DISCRETE_VALUES
    bin_counts = np.concatenate([[0], inner, [0]]) if edges.size else np.zeros(0, dtype=np.int64)
    return NumericReference(
        name=name,
        count=int(summary["count"]),
        missing_rate=float(summary["missing_rate"]),
        std=summary.get("std"),
        edges=edges,
        bin_counts=bin_counts,
        sample=present,
        sample_bins=bin_indices(edges, present) if edges.size else np.zeros(0, dtype=np.int64),
        discrete_values=distinct if discrete else None,
        discrete_counts=_value_counts(distinct, counts, edges, bin_counts, summary["mean"] * summary["count"])
        if discrete
        else None,
    )


def _value_counts(
    values: np.ndarray, sample_counts: np.ndarray, edges: np.ndarray, bin_counts: np.ndarray, total: float
) -> np.ndarray:
    """The whole data's count of each of a few values (summing to `total`, the sum of all values): a value
    alone in its bin has the bin's count; two values sharing one bin split it as `total` says. When more
    share a bin, or a bin counts values the sample lacks, the sample's own counts are all there is."""
    bins = bin_indices(edges, values)
    occupied, per_bin = np.unique(bins, return_counts=True)
    shared = occupied[per_bin == 2]
    if per_bin.max() > 2 or shared.size > 1 or not np.isin(np.flatnonzero(bin_counts), occupied).all():
        return sample_counts
    counts: np.ndarray = bin_counts[bins].astype(np.int64)
    if shared.size:
        first, second = np.flatnonzero(bins == shared[0])
        alone = bins != shared[0]
        together = int(bin_counts[shared[0]])
        rest = total - float(np.sum(values[alone] * counts[alone]))
        of_first = round(float((rest - values[second] * together) / (values[first] - values[second])))
        if not 0 <= of_first <= together:
            return sample_counts
        counts[first], counts[second] = of_first, together - of_first
    return counts


def _categorical(name: str, summary: Mapping[str, Any]) -> CategoricalReference:
    frequencies: Mapping[str, float] = summary["frequencies"]
    count = int(summary["count"])
    return CategoricalReference(
        name=name,
        count=count,
        missing_rate=float(summary["missing_rate"]),
        distinct=int(summary.get("distinct", len(frequencies))),
        categories=tuple(frequencies),
        # The shares were count / total, so scaling back and rounding gives the counts exactly.
        counts=np.rint(np.asarray(list(frequencies.values()), dtype=np.float64) * count).astype(np.int64),
    )


def _output(distribution: Mapping[str, Any] | None, row_count: int) -> FeatureReference | None:
    if not distribution:
        return None
    if distribution.get("kind") == "classification":
        classes: Mapping[str, float] = distribution["predicted_classes"]
        return _categorical(
            "prediction",
            {"frequencies": classes, "count": row_count, "missing_rate": 0.0, "distinct": len(classes)},
        )
    return _numeric("prediction", distribution, [])
