"""Each drift statistic agrees with scipy or with the formula computed by hand, Evidently's way."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import spatial, stats  # type: ignore[import-untyped]

from services.monitor import statistics

RNG = np.random.default_rng(42)
REFERENCE = RNG.normal(0, 1, 800)
CURRENT = RNG.normal(0.2, 1.3, 1200)


def test_psi_is_the_sum_over_bins_of_share_difference_times_log_ratio() -> None:
    reference, current = np.array([10, 20, 30, 40]), np.array([25, 25, 25, 25])
    p, q = reference / 100, current / 100
    assert statistics.psi(reference, current) == pytest.approx(
        float(np.sum((p - q) * np.log(p / q))), abs=1e-12
    )


def test_psi_fills_empty_bins_with_a_ten_thousandth() -> None:
    reference, current = np.array([0, 50, 50]), np.array([10, 40, 50])
    p, q = np.array([0.0001, 0.5, 0.5]), np.array([0.1, 0.4, 0.5])
    assert statistics.psi(reference, current) == pytest.approx(
        float(np.sum((p - q) * np.log(p / q))), abs=1e-12
    )


def test_psi_fills_empty_bins_with_a_millionth_of_a_share_already_below_a_ten_thousandth() -> None:
    reference = np.array([0, 1, 99_999])  # smallest share 1e-5
    filled = statistics.fill_empty_bins(reference / reference.sum())
    assert filled[0] == pytest.approx(1e-5 / 1e6)
    assert filled[1:] == pytest.approx(reference[1:] / reference.sum())


def test_psi_of_an_empty_side_is_nan() -> None:
    assert math.isnan(statistics.psi(np.array([1, 2]), np.array([0, 0])))


def test_ks_p_value_is_scipys_two_sample_test() -> None:
    assert statistics.ks_p_value(REFERENCE, CURRENT) == stats.ks_2samp(REFERENCE, CURRENT).pvalue


def test_wasserstein_is_normed_by_the_reference_population_std() -> None:
    expected = stats.wasserstein_distance(REFERENCE, CURRENT) / np.std(REFERENCE)
    assert statistics.wasserstein_normed(REFERENCE, CURRENT) == pytest.approx(expected, abs=1e-12)
    assert statistics.wasserstein_normed(REFERENCE, CURRENT, reference_std=2.0) == pytest.approx(
        stats.wasserstein_distance(REFERENCE, CURRENT) / 2.0, abs=1e-12
    )


def test_wasserstein_norm_is_floored_for_a_constant_reference() -> None:
    constant = np.full(10, 3.0)
    assert statistics.wasserstein_normed(constant, constant + 0.01) == pytest.approx(0.01 / 0.001)


def test_stratum_weights_give_each_bin_its_share_of_the_whole_data() -> None:
    bins = np.array([0, 0, 0, 1, 2, 2])  # the sample over-represents bin 0
    counts = np.array([100, 300, 600])
    weights = statistics.stratum_weights(bins, counts)
    per_bin = np.bincount(bins, weights=weights)
    assert per_bin == pytest.approx([0.1, 0.3, 0.6])


def test_stratum_weights_of_a_sample_of_all_the_data_change_nothing() -> None:
    edges = np.quantile(REFERENCE, np.linspace(0, 1, 11))
    bins = np.clip(np.searchsorted(edges, REFERENCE, side="right") - 1, 0, 9)
    weights = statistics.stratum_weights(bins, np.bincount(bins, minlength=10))
    assert weights == pytest.approx(np.full(REFERENCE.size, 1 / REFERENCE.size))
    weighted = statistics.wasserstein_normed(REFERENCE, CURRENT, None, weights, None)
    assert weighted == pytest.approx(statistics.wasserstein_normed(REFERENCE, CURRENT), abs=1e-12)


def test_chi_square_compares_current_counts_with_reference_shares_scaled_to_the_current_total() -> None:
    reference, current = np.array([50, 30, 20]), np.array([120, 100, 80])
    expected = reference * current.sum() / reference.sum()
    assert statistics.chi_square_p_value(reference, current) == pytest.approx(
        stats.chisquare(current, expected).pvalue, abs=1e-15
    )


def test_chi_square_p_value_is_zero_for_a_category_the_reference_never_had() -> None:
    assert statistics.chi_square_p_value(np.array([50, 50, 0]), np.array([40, 40, 1])) == 0.0


def test_jensen_shannon_is_the_root_of_the_mean_kl_divergence_to_the_midpoint() -> None:
    reference, current = np.array([5, 3, 2, 0]), np.array([2, 2, 3, 3])
    p, q = reference / reference.sum(), current / current.sum()
    m = (p + q) / 2

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        present = a > 0
        return float(np.sum(a[present] * np.log(a[present] / b[present])))

    by_hand = math.sqrt((kl(p, m) + kl(q, m)) / 2)
    assert statistics.jensen_shannon_distance(reference, current) == pytest.approx(by_hand, abs=1e-12)
    assert by_hand == pytest.approx(spatial.distance.jensenshannon(p, q), abs=1e-12)


def test_z_test_compares_the_share_of_the_second_value() -> None:
    reference, current = np.array([600, 400]), np.array([550, 450])
    n1, n2 = 1000, 1000
    p1, p2 = 0.4, 0.45
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    z = (p1 - p2) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    assert statistics.z_test_p_value(reference, current) == pytest.approx(2 * (1 - stats.norm.cdf(abs(z))))


def test_z_test_of_one_value_on_both_sides_is_one() -> None:
    assert statistics.z_test_p_value(np.array([10, 0]), np.array([7, 0])) == 1.0
