"""Tabulated functions: O(1) interpolation on uniform grids and inverse CDFs of tabulated
densities (the population draws are table look-ups, so 10^6 systems take seconds)."""

from __future__ import annotations

import numpy as np


def uinterp(x, x0: float, dx: float, y: np.ndarray) -> np.ndarray:
    """Linear interpolation of y tabulated on the uniform grid x0 + i dx (clamped at the ends):
    O(1) per point, unlike np.interp's binary search."""
    t = (np.asarray(x, float) - x0) / dx
    n = y.shape[0]
    i = np.clip(np.floor(t), 0, n - 2).astype(np.intp)
    f = np.clip(t - i, 0.0, 1.0)
    return y[i] * (1.0 - f) + y[i + 1] * f


def quantile_table(x: np.ndarray, pdf: np.ndarray, n_u: int = 8193) -> np.ndarray:
    """Inverse CDF of a tabulated pdf on a uniform grid of n_u probabilities in [0, 1]."""
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (pdf[1:] + pdf[:-1]) * np.diff(x))])
    cdf /= cdf[-1]
    # support only: from the last point with cdf = 0 to the first with cdf = 1
    i0 = int(np.flatnonzero(cdf <= 0.0)[-1])
    i1 = int(np.flatnonzero(cdf >= 1.0)[0])
    x, cdf = x[i0 : i1 + 1], cdf[i0 : i1 + 1]
    keep = np.concatenate([[True], np.diff(cdf) > 0])
    return np.interp(np.linspace(0.0, 1.0, n_u), cdf[keep], x[keep])


def draw(table: np.ndarray, u: np.ndarray) -> np.ndarray:
    return uinterp(u, 0.0, 1.0 / (table.shape[0] - 1), table)

