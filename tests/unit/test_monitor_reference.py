"""The monitor reads the trainer's profile into counts it can compare: exact where the profile holds them."""

from __future__ import annotations

import numpy as np
import pytest

from services.monitor.reference import CategoricalReference, NumericReference, ProfileError, Reference
from tests.monitor_data import profile_of, traffic


def test_numeric_features_get_open_ended_outer_bins_around_the_profiles() -> None:
    profile = profile_of(traffic(3000, seed=1))
    income = Reference.from_profile(profile).features["income"]
    assert isinstance(income, NumericReference)
    assert income.bin_counts.tolist() == [0, *profile["features"]["income"]["histogram"]["counts"], 0]
    assert income.sample.size == 1000
    assert income.std == profile["features"]["income"]["std"]


def test_category_counts_are_rebuilt_exactly_from_the_shares() -> None:
    frame = traffic(3001, seed=1)
    region = Reference.from_profile(profile_of(frame)).features["region"]
    assert isinstance(region, CategoricalReference)
    counts = frame["region"].value_counts()
    assert dict(zip(region.categories, region.counts.tolist(), strict=True)) == counts.to_dict()


@pytest.mark.parametrize(
    ("values", "shares"), [([0.0, 1.0], [0.7, 0.3]), ([0.0, 1.0, 2.0, 3.0, 4.0], [0.1, 0.3, 0.2, 0.25, 0.15])]
)
def test_a_few_valued_features_counts_are_those_of_the_whole_data(
    values: list[float], shares: list[float]
) -> None:
    frame = traffic(20_000, seed=1)
    frame["few"] = np.random.default_rng(3).choice(values, 20_000, p=shares)
    few = Reference.from_profile(profile_of(frame)).features["few"]
    assert isinstance(few, NumericReference)
    assert few.discrete_values is not None
    assert few.discrete_values.tolist() == values
    assert few.discrete_counts is not None
    assert few.discrete_counts.tolist() == frame["few"].value_counts().sort_index().tolist()


def test_an_unknown_profile_version_is_refused() -> None:
    with pytest.raises(ProfileError, match="unsupported profile_version 2"):
        Reference.from_profile({"profile_version": 2})
