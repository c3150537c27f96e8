"""Checking a fitted selection function against injections: binned predictions with bands,
held-out validation and a calibration statistic. numpy + scipy.

For a set of injections (a bin) with observed passes k of n, the model predicts the mean of P over
the bin's injections. Two bands per bin, both from Gaussian draws of the model's coefficients (the
band's own description, ``OperatingPointFit.draws``):

- the model band: the central ``confidence`` interval of the predicted bin mean (what the model
  says about the bin's true completeness; the closure test checks it against the truth);
- the predictive band: the same draws with the bin's n injections each drawn pass/fail from its
  predicted P, i.e. where an observed fraction k/n of these n injections should fall if the model
  is right (the held-out validation checks the observed fraction against it; an observed value
  carries its own binomial scatter, which the model band alone does not).

The calibration statistic is a Hosmer-Lemeshow chi^2 over groups of equal predicted P: sum over
groups of (k - sum p)^2 / (phi sum p (1 - p) + var_model(sum p)), with its p-value for ``groups``
degrees of freedom (held-out data: no parameters were fitted to them).

Injections of one sky region share its conditions and its draw of hosts, so regions scatter by
more than independent draws would: phi (``region_dispersion``, the regions' Pearson chi^2 per
degree of freedom on the fit data, at least 1) widens the binomial part of the predictive band and
of the calibration statistic, the quasi-binomial treatment of clustered counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import chi2

from dhs.evaluation.scores import sigmoid
from dhs.selection.fit import OperatingPointFit


@dataclass(frozen=True)
class Draws:
    """The model at a set of injections: its P (``p_hat``), P under ``n_draws`` coefficient draws
    (``P``, (D, n)) and one pass/fail outcome per draw and injection drawn from those (``sim``)."""
    p_hat: np.ndarray
    P: np.ndarray
    sim: np.ndarray


def predictive_draws(B: np.ndarray, fit: OperatingPointFit, n_draws: int, seed: int) -> Draws:
    rng = np.random.default_rng(seed)
    P = sigmoid(fit.draws(n_draws, rng) @ B.T)
    return Draws(sigmoid(B @ fit.values), P, rng.random(P.shape) < P)


def region_dispersion(p_hat: np.ndarray, passed: np.ndarray, region: np.ndarray) -> dict[str, Any]:
    """Extra-binomial scatter between sky regions: the Pearson chi^2 of the regions' pass counts
    about the model, per degree of freedom (G - 1 for G regions),

        phi = sum_r (k_r - sum_r p)^2 / sum_r p (1 - p) / (G - 1),

    on the data the model was fitted to. phi ~ 1 when injections are independent given the model;
    above 1, regions differ by more than the model's variables explain (conditions and hosts shared
    within a region), and an observed fraction over a few regions scatters that much more."""
    _, r = np.unique(region, return_inverse=True)
    k = np.bincount(r, weights=passed)
    e = np.bincount(r, weights=p_hat)
    v = np.bincount(r, weights=p_hat * (1 - p_hat))
    use = v > 0
    g = int(use.sum())
    if g < 2:
        return {"phi": 1.0, "regions": g}
    chi2_ = float(((k[use] - e[use]) ** 2 / v[use]).sum())
    return {"phi": chi2_ / (g - 1), "chi2": chi2_, "regions": g}


def bin_predictions(d: Draws, passed: np.ndarray, groups: np.ndarray, confidence: float,
                    dispersion: float = 1.0) -> list[dict[str, Any]]:
    """Per group label (>= 0; negative labels skipped): n, observed k and fraction, the model's
    mean P with its model band and predictive band (its binomial part widened by
    sqrt(``dispersion``), the regions' extra-binomial scatter, where above 1)."""
    a = (1 - confidence) / 2
    out = []
    for g in np.unique(groups[groups >= 0]):
        m = groups == g
        n = int(m.sum())
        mean_d = d.P[:, m].mean(axis=1)
        frac_d = mean_d + np.sqrt(max(dispersion, 1.0)) * (d.sim[:, m].mean(axis=1) - mean_d)
        k = int(passed[m].sum())
        out.append({"group": int(g), "n": n, "k": k, "observed": k / n, "model": float(d.p_hat[m].mean()),
                    "model_lo": float(np.quantile(mean_d, a)), "model_hi": float(np.quantile(mean_d, 1 - a)),
                    "predictive_lo": float(np.quantile(frac_d, a)), "predictive_hi": float(np.quantile(frac_d, 1 - a)),
                    "sum_p": float(d.p_hat[m].sum()), "var_sum_p": float(np.var(d.P[:, m].sum(axis=1))),
                    "sum_pq": float((d.p_hat[m] * (1 - d.p_hat[m])).sum())})
    return out


def quantile_groups(x: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """(labels, edges): equal-count bins of the finite values (labels -1 where not finite)."""
    x = np.asarray(x, float)
    fin = np.isfinite(x)
    edges = np.unique(np.quantile(x[fin], np.linspace(0, 1, n_bins + 1))) if fin.any() else np.array([0.0, 1.0])
    lab = np.full(x.shape, -1)
    if edges.size >= 2:
        lab[fin] = np.clip(np.searchsorted(edges, x[fin], side="right") - 1, 0, edges.size - 2)
    return lab, edges


def hosmer_lemeshow(cells: Sequence[Mapping[str, Any]], phi: float = 1.0) -> dict[str, Any]:
    stat = 0.0
    for c in cells:
        den = max(phi, 1.0) * c["sum_pq"] + c["var_sum_p"]
        if den > 0:
            stat += (c["k"] - c["sum_p"]) ** 2 / den
    dof = len(cells)
    return {"statistic": float(stat), "dof": dof, "p_value": float(chi2.sf(stat, dof)) if dof else None}


def validate(B: np.ndarray, passed: np.ndarray, variables: Mapping[str, np.ndarray], surface: tuple[str, str] | None,
             fit: OperatingPointFit, confidence: float, n_bins: int, min_bin_n: int, n_draws: int, seed: int,
             calibration_groups: int = 10, dispersion: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Held-out validation of one operating point: per variable, equal-count bins of the held-out
    injections (and the 2-D surface of ``surface``, n_bins/2 per axis), observed against predicted;
    the fraction of bins (n >= min_bin_n) whose observed fraction lies in the predictive band and in
    the model band; the calibration statistic over groups of predicted P. ``dispersion``
    (``region_dispersion`` on the fit data) widens the predictive band's binomial part: the held-out
    injections come from a few sky regions, and their fraction carries the regions' scatter."""
    phi = float((dispersion or {}).get("phi", 1.0))
    d = predictive_draws(B, fit, n_draws, seed)
    bins = []
    for name, x in variables.items():
        lab, edges = quantile_groups(x, n_bins)
        for c in bin_predictions(d, passed, lab, confidence, phi):
            c.update({"var": name, "lo": float(edges[c["group"]]), "hi": float(edges[c["group"] + 1])})
            bins.append(c)
    if surface is not None and all(s in variables for s in surface):
        nb = max(2, n_bins // 2)
        lx, ex = quantile_groups(variables[surface[0]], nb)
        ly, ey = quantile_groups(variables[surface[1]], nb)
        lab = np.where((lx >= 0) & (ly >= 0), lx * (ey.size - 1) + ly, -1)
        for c in bin_predictions(d, passed, lab, confidence, phi):
            ix, iy = divmod(c["group"], ey.size - 1)
            c.update({"var": f"{surface[0]}__{surface[1]}", "lo": float(ex[ix]), "hi": float(ex[ix + 1]),
                      "y_lo": float(ey[iy]), "y_hi": float(ey[iy + 1])})
            bins.append(c)
    for c in bins:
        c["counted"] = c["n"] >= min_bin_n
        c["inside_predictive"] = c["predictive_lo"] <= c["observed"] <= c["predictive_hi"]
        c["inside_model_band"] = c["model_lo"] <= c["observed"] <= c["model_hi"]
    counted = [c for c in bins if c["counted"]]
    p_hat = d.p_hat
    lab, _ = quantile_groups(p_hat, calibration_groups)
    cal = bin_predictions(d, passed, lab, confidence)
    eps = 1e-12
    ll = float(np.mean(passed * np.log(p_hat + eps) + (1 - passed) * np.log(1 - p_hat + eps))) if len(passed) else None
    base = float(np.mean(passed)) if len(passed) else None
    ll0 = (float(np.mean(passed * np.log(base + eps) + (1 - passed) * np.log(1 - base + eps))) if base is not None else None)
    return {
        "n": int(len(passed)), "k": int(np.sum(passed)), "dispersion": dict(dispersion or {"phi": 1.0}),
        "n_bins": len(bins), "n_bins_counted": len(counted), "min_bin_n": min_bin_n,
        "fraction_inside_predictive": (float(np.mean([c["inside_predictive"] for c in counted])) if counted else None),
        "fraction_inside_model_band": (float(np.mean([c["inside_model_band"] for c in counted])) if counted else None),
        "calibration": hosmer_lemeshow(cal, phi), "calibration_groups": cal,
        "brier": float(np.mean((p_hat - passed) ** 2)) if len(passed) else None,
        "log_likelihood_per_injection": ll, "log_likelihood_constant": ll0,
        "bins": bins,
    }
