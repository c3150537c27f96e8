"""Wilson intervals against scipy, and the region bootstrap: coverage near nominal, determinism,
empty bins."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from dhs.evaluation.intervals import region_bootstrap, wilson_interval


def test_wilson_equals_scipy_on_many_k_n():
    rng = np.random.default_rng(3)
    pairs = [(0, 1), (1, 1), (0, 50), (50, 50), (0, 1000), (1000, 1000), (1, 2), (7, 13)]
    pairs += [(int(k), int(n)) for n in rng.integers(1, 5000, 150) for k in [rng.integers(0, n + 1)]]
    k, n = np.array(pairs).T
    lo, hi = wilson_interval(k, n)
    for i, (kk, nn) in enumerate(pairs):
        ci = binomtest(kk, nn).proportion_ci(confidence_level=0.95, method="wilson")
        assert lo[i] == pytest.approx(ci.low, abs=1e-12) and hi[i] == pytest.approx(ci.high, abs=1e-12), (kk, nn)
    assert np.isnan(wilson_interval(0, 0)[0])
    # the estimate always lies inside its interval, exactly at the ends (k = 0, k = n)
    assert np.all((lo <= k / n) & (k / n <= hi))
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(20, 20)[1] == 1.0
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_region_bootstrap_covers_truth_at_nominal_rate():
    """Regions with their own completeness (p_r ~ Beta around p): the interval for the pooled
    completeness should cover it about 95% of the time."""
    rng = np.random.default_rng(11)
    p_true, n_regions, reps, covered = 0.7, 40, 300, 0
    for r in range(reps):
        n_r = rng.integers(20, 80, n_regions)
        p_r = rng.beta(p_true * 30, (1 - p_true) * 30, n_regions)
        k_r = rng.binomial(n_r, p_r)
        lo, hi = region_bootstrap(k_r[:, None], n_r[:, None], n_boot=300, seed=r)
        # the estimand: the population completeness, p_true, weighted like the sample
        covered += lo[0] <= p_true <= hi[0]
    rate = covered / reps
    assert 0.88 <= rate <= 0.99, rate


def test_bootstrap_is_deterministic_and_empty_bins_are_nan():
    k = np.array([[1, 0], [3, 0], [2, 0]])
    n = np.array([[2, 0], [4, 0], [5, 0]])
    a = region_bootstrap(k, n, 200, seed=5)
    b = region_bootstrap(k, n, 200, seed=5)
    np.testing.assert_array_equal(a[0], b[0])
    assert np.isnan(a[0][1]) and np.isnan(a[1][1])
    assert 0 <= a[0][0] <= 6 / 11 <= a[1][0] <= 1
