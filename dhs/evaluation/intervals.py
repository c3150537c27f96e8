"""Binomial uncertainty for completeness: Wilson score intervals and the region bootstrap.

Wilson (1927) interval for k successes in n trials at confidence 1 - alpha:
    centre = (k + z^2/2) / (n + z^2),  half = z / (n + z^2) * sqrt(k (n - k) / n + z^2 / 4)
It stays inside [0, 1] and behaves at k = 0 and k = n, where the Wald interval collapses.
Bins with n < 50 are flagged by the callers (docs/conventions.md, evaluation rules: Wilson for
n >= 50).

The region bootstrap resamples sky regions with replacement and recomputes k/n per bin from
the (region x bin) count table, so it carries the region-to-region scatter (depth, seeing,
host density) that a per-stamp binomial interval ignores.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.stats import norm

MIN_N_WILSON = 50


def wilson_interval(k, n, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) arrays; NaN where n == 0."""
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    if np.any(k < 0) or np.any(k > n):
        raise ValueError("need 0 <= k <= n in every bin")
    z = norm.ppf(0.5 + confidence / 2.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        denom = n + z * z
        centre = (k + z * z / 2.0) / denom
        half = z / denom * np.sqrt(k * (n - k) / n + z * z / 4.0)
        low, high = np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)
    # exact at the ends: centre - half cancels to ~1e-17 at k = 0, which would exclude the estimate 0
    low, high = np.where(k == 0, 0.0, low), np.where(k == n, 1.0, high)
    empty = n == 0
    return np.where(empty, np.nan, low), np.where(empty, np.nan, high)


def bootstrap_multiplicities(n_regions: int, n_boot: int, seed=0) -> np.ndarray:
    """(n_boot, n_regions) float64: how often each region is drawn in each replicate (regions
    drawn with replacement, n_regions per replicate)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_regions, size=(n_boot, n_regions))
    offsets = draws + np.arange(n_boot)[:, None] * n_regions
    return np.bincount(offsets.ravel(), minlength=n_boot * n_regions).reshape(n_boot, n_regions).astype(np.float64)


def region_bootstrap(k_rb: np.ndarray, n_rb: np.ndarray, n_boot: int = 1000, seed=0, confidence: float = 0.95,
                     multiplicities: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of completeness per bin from a (regions x bins) table of recovered
    (``k_rb``) and total (``n_rb``) injections. Each replicate draws regions with replacement;
    its counts are multiplicities @ table. Pass ``multiplicities`` (``bootstrap_multiplicities``)
    to share one set of replicates across bins, variables and thresholds (consistent and
    fast). Replicates where a bin holds no injection are left out of that bin's percentiles
    (NaN when all are empty)."""
    k_rb = np.asarray(k_rb, dtype=np.float64)
    n_rb = np.asarray(n_rb, dtype=np.float64)
    if k_rb.shape != n_rb.shape or k_rb.ndim != 2:
        raise ValueError(f"need two (regions, bins) tables of one shape, got {k_rb.shape} and {n_rb.shape}")
    n_regions, n_bins = k_rb.shape
    if multiplicities is None:
        if n_boot < 1 or n_regions == 0:
            return np.full(n_bins, np.nan), np.full(n_bins, np.nan)
        multiplicities = bootstrap_multiplicities(n_regions, n_boot, seed)
    elif multiplicities.shape[1] != n_regions:
        raise ValueError(f"multiplicities are for {multiplicities.shape[1]} regions, the table has {n_regions}")
    if multiplicities.shape[0] == 0 or n_regions == 0:
        return np.full(n_bins, np.nan), np.full(n_bins, np.nan)
    kk, nn = multiplicities @ k_rb, multiplicities @ n_rb
    with np.errstate(invalid="ignore", divide="ignore"):
        reps = np.where(nn > 0, kk / nn, np.nan)
    a = (1.0 - confidence) / 2.0
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN bins (no replicate filled them) stay NaN
        low = np.nanquantile(reps, a, axis=0)
        high = np.nanquantile(reps, 1.0 - a, axis=0)
    return low, high
