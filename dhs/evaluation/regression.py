"""theta_E regression of the multi-head model against the truth, binned by theta_E / PSF.

For injections only (controls have no theta_E): residual = predicted - true theta_E [arcsec].
Per bin: n, median residual (bias), mean residual, robust scatter 1.4826 x MAD of the residual,
and the same two for the fractional residual (pred - true) / true. Where theta_E/PSF < ~1 the arc
is blended with the host and the PSF, and the regression is expected to fail first.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

MAD_TO_SIGMA = 1.4826


def _robust(res: np.ndarray) -> tuple[float, float]:
    if res.size == 0:
        return float("nan"), float("nan")
    med = float(np.median(res))
    return med, float(MAD_TO_SIGMA * np.median(np.abs(res - med)))


def theta_e_regression_table(scores: pd.DataFrame, edges: Sequence[float], split: str = "test") -> pd.DataFrame:
    """One row per theta_E/PSF bin (plus 'all') of injections in ``split`` with a prediction."""
    if "theta_e_pred_arcsec" not in scores.columns:
        raise ValueError("no theta_e_pred_arcsec column: the model has no theta_E head (train.theta_head: true)")
    inj = scores[(scores["split"] == split) & (scores["label"] == 1)]
    true = inj["theta_e_arcsec"].to_numpy(np.float64)
    pred = inj["theta_e_pred_arcsec"].to_numpy(np.float64)
    ratio = inj["theta_e_over_psf"].to_numpy(np.float64)
    ok = np.isfinite(true) & np.isfinite(pred) & (true > 0)
    e = np.asarray(edges, dtype=np.float64)
    rows = []
    groups = [("all", ok)] + [(f"[{lo:g}, {hi:g})", ok & (ratio >= lo) & ((ratio < hi) if i < len(e) - 2 else (ratio <= hi)))
                              for i, (lo, hi) in enumerate(zip(e[:-1], e[1:]))]
    for name, m in groups:
        res, frac = pred[m] - true[m], (pred[m] - true[m]) / true[m]
        bias, scatter = _robust(res)
        fbias, fscatter = _robust(frac)
        rows.append({"theta_e_over_psf_bin": name, "n": int(m.sum()), "bias_arcsec": bias,
                     "mean_residual_arcsec": float(res.mean()) if res.size else float("nan"), "scatter_arcsec": scatter,
                     "fractional_bias": fbias, "fractional_scatter": fscatter})
    return pd.DataFrame(rows)
