"""The drift statistics, each a plain function of arrays, defined as Evidently (0.7) defines them.

Tests return a p-value (drift when it is small), distances a value (drift when it is large); which
verdict each implies is `drift.py`'s business. Inputs are what the monitor keeps in bounded memory:
samples for the Kolmogorov-Smirnov test and the Wasserstein distance, counts per bin or per category
for the others. Missing values are never among them (Evidently drops them too).
"""

from __future__ import annotations

import numpy as np
from scipy import spatial, stats  # type: ignore[import-untyped]

# Evidently's floor for the reference std that normalises the Wasserstein distance.
MIN_WASSERSTEIN_NORM = 0.001
# Evidently's stand-in share for an empty bin in PSI (a log of zero otherwise), see `fill_empty_bins`.
EMPTY_BIN_SHARE = 0.0001
TINY_SHARE_DIVISOR = 10**6


def shares(counts: np.ndarray) -> np.ndarray:
    """Counts as shares of their total (all zeros when there are none)."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    return counts / total if total > 0 else np.zeros_like(counts)


def fill_empty_bins(bin_shares: np.ndarray) -> np.ndarray:
    """Evidently's handling of empty bins: each becomes 0.0001, or, when some bin already holds no more
    than that, the smallest non-empty share divided by a million."""
    filled = np.array(bin_shares, dtype=np.float64)
    smallest = filled[filled != 0].min()
    filled[filled == 0] = smallest / TINY_SHARE_DIVISOR if smallest <= EMPTY_BIN_SHARE else EMPTY_BIN_SHARE
    return filled


def psi(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """Population stability index of two distributions on the same bins (or categories), from their
    counts: sum((ref - cur) * ln(ref / cur)) over shares, empty bins filled as Evidently fills them.
    NaN when either side has no values."""
    if np.sum(reference_counts) == 0 or np.sum(current_counts) == 0:
        return float("nan")
    reference = fill_empty_bins(shares(reference_counts))
    current = fill_empty_bins(shares(current_counts))
    return float(np.sum((reference - current) * np.log(reference / current)))


def ks_p_value(reference: np.ndarray, current: np.ndarray) -> float:
    """The two-sided two-sample Kolmogorov-Smirnov test's p-value (scipy's `ks_2samp`, exact or
    asymptotic as scipy chooses, like Evidently)."""
    return float(stats.ks_2samp(reference, current).pvalue)


def wasserstein_normed(
    reference: np.ndarray,
    current: np.ndarray,
    reference_std: float | None = None,
    reference_weights: np.ndarray | None = None,
    current_weights: np.ndarray | None = None,
) -> float:
    """The first Wasserstein distance between two samples divided by the reference's population std
    (floored at 0.001), as Evidently computes it. When the samples stand for larger data,
    `reference_std` is the whole reference's std and the weights are `stratum_weights`."""
    std = float(np.std(reference)) if reference_std is None else reference_std
    distance = stats.wasserstein_distance(reference, current, reference_weights, current_weights)
    return float(distance) / max(std, MIN_WASSERSTEIN_NORM)


def stratum_weights(sample_bins: np.ndarray, bin_counts: np.ndarray) -> np.ndarray:
    """Weights that give a sample's values in each bin the share of the bin in the whole data it was
    drawn from (post-stratification): the bins' exact counts correct the sample's chance imbalance
    between them, which halves the noise of a Wasserstein distance between two samples of 1,000 and
    5,000 values. A sample of all the data gets equal weights."""
    in_sample = np.bincount(sample_bins, minlength=bin_counts.size)
    weights = bin_counts[sample_bins] / (bin_counts.sum() * in_sample[sample_bins])
    return np.asarray(weights, dtype=np.float64)


def chi_square_p_value(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """Pearson's chi-square goodness-of-fit p-value of the current counts against the reference's
    shares scaled to the current total (Evidently's test). A category the reference never had makes
    the statistic infinite and the p-value 0."""
    reference_counts = np.asarray(reference_counts, dtype=np.float64)
    current_counts = np.asarray(current_counts, dtype=np.float64)
    expected = reference_counts * (current_counts.sum() / reference_counts.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(stats.chisquare(current_counts, expected).pvalue)


def jensen_shannon_distance(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """The Jensen-Shannon distance (natural log, so between 0 and sqrt(ln 2)) of two distributions on
    the same bins or categories, from their counts. NaN when either side has no values."""
    if np.sum(reference_counts) == 0 or np.sum(current_counts) == 0:
        return float("nan")
    return float(spatial.distance.jensenshannon(shares(reference_counts), shares(current_counts)))


def z_test_p_value(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """The two-sided two-proportion Z test's p-value for a binary feature, from the counts of its two
    values (in the same, sorted order on both sides, as Evidently orders them): the share of the second
    value is compared. 1 when both sides hold the same single value."""
    reference_counts = np.asarray(reference_counts, dtype=np.float64)
    current_counts = np.asarray(current_counts, dtype=np.float64)
    if np.count_nonzero(reference_counts + current_counts) < 2:
        return 1.0
    n_reference, n_current = reference_counts.sum(), current_counts.sum()
    p_reference = reference_counts[1:].sum() / n_reference
    p_current = current_counts[1:].sum() / n_current
    pooled = (p_reference * n_reference + p_current * n_current) / (n_reference + n_current)
    z = (p_reference - p_current) / np.sqrt(pooled * (1 - pooled) * (1 / n_reference + 1 / n_current))
    return float(2 * (1 - stats.norm.cdf(np.abs(z))))
