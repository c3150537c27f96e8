"""The monotone additive logistic fit: recovery of a known additive truth, the monotone bounds,
agreement with a general-purpose optimiser, and a band whose Gaussian draws reproduce the
bootstrap replicates' spread of predictions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize

from dhs.evaluation.intervals import bootstrap_multiplicities
from dhs.evaluation.scores import sigmoid
from dhs.selection import fit as F


def _data(n=6000, seed=0):
    rng = np.random.default_rng(seed)
    t = {"log10_snr_implied": rng.uniform(0, 2.5, n), "theta_e_over_psf": rng.uniform(0.2, 2.5, n)}
    eta = 3.0 * (t["log10_snr_implied"] - 1.2) + np.sin(2 * t["theta_e_over_psf"])       # increasing + a wiggle
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    return t, eta, y, rng.integers(0, 40, n)


def test_recovers_an_additive_truth_and_respects_monotone_bounds():
    t, eta, y, _ = _data()
    d = F.design_for(t, 10, names=list(t))
    theta = F.fit_logistic(d.basis(t) @ d.A, y, np.ones(len(y)), d.penalty(1.0, 1e-3), d.bounds())
    v = d.values(theta)
    est = d.basis(t) @ v
    assert np.sqrt(np.mean((est - eta) ** 2)) < 0.25               # logit recovered
    o, K = d.offsets["log10_snr_implied"], d.knots["log10_snr_implied"].size
    assert np.all(np.diff(v[o:o + K]) >= -1e-12)                   # the monotone term never falls


def test_monotone_constraint_holds_against_data_that_dip():
    rng = np.random.default_rng(1)
    n = 4000
    t = {"log10_snr_implied": rng.uniform(0, 2, n)}
    eta = np.where(t["log10_snr_implied"] < 1, 2 * t["log10_snr_implied"], 2 - 3 * (t["log10_snr_implied"] - 1))   # rises then falls
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    d = F.design_for(t, 8, names=list(t))
    v = d.values(F.fit_logistic(d.basis(t) @ d.A, y, np.ones(n), d.penalty(0.1, 1e-3), d.bounds()))
    assert np.all(np.diff(v[1:]) >= -1e-12)
    assert np.diff(v[1:]).max() > 0.1                              # it rises where the data rise, then stays flat


def test_newton_matches_lbfgs_optimum():
    t, _, y, _ = _data(3000, seed=2)
    d = F.design_for(t, 8, names=list(t))
    X, P, w = d.basis(t) @ d.A, d.penalty(3.0, 1e-3), np.random.default_rng(0).integers(0, 3, len(y)).astype(float)
    th = F.fit_logistic(X, y, w, P, d.bounds())

    def f(theta):
        eta = X @ theta
        return F._objective(X, y, w, P, theta), X.T @ (w * (1 / (1 + np.exp(-eta)) - y)) + P @ theta
    ref = minimize(f, np.zeros(X.shape[1]), jac=True, method="L-BFGS-B", bounds=d.bounds(), options={"maxiter": 10000, "ftol": 1e-15, "gtol": 1e-10})
    assert F._objective(X, y, w, P, th) <= ref.fun + 1e-6 * abs(ref.fun)


def test_band_draws_reproduce_the_replicates_spread_of_predictions():
    """Collinear terms move the coefficients a lot and the predictions little: the band's
    components are cut in the metric of the predictions, so Gaussian draws from them spread the
    mean prediction as much as the bootstrap refits do."""
    rng = np.random.default_rng(3)
    n = 3000
    a = rng.uniform(0.2, 2.5, n)
    t = {"theta_e_over_psf": a, "theta_e_arcsec": 1.3 * a + rng.normal(0, 0.05, n), "log10_snr_implied": rng.uniform(0, 2.5, n)}
    eta = 2.5 * (t["log10_snr_implied"] - 1.2) + 0.8 * a
    s = 1 / (1 + np.exp(-(eta + rng.logistic(size=n))))    # a score whose threshold at 0.5 passes with P = sigmoid(eta)
    region = rng.integers(0, 40, n)
    d = F.design_for(t, 8, names=list(t))
    B = d.basis(t)
    cfg = F.FitConfig.from_params({"n_replicates": 60}, confidence=0.95)
    fit = F.fit_operating_point(d, B, s, region, np.zeros(1), np.zeros(1, int), 40, "x", None, 0.5, cfg,
                                bootstrap_multiplicities(40, 60, 0))
    rep_sd = sigmoid(fit.replicates @ B.T).mean(axis=1).std()
    draw_sd = sigmoid(fit.draws(2000, np.random.default_rng(0)) @ B.T).mean(axis=1).std()
    assert draw_sd == pytest.approx(rep_sd, rel=0.2)
    # pointwise too: the file's sd against the replicates' sd of the logit at each point
    _, sd = F.eta_sd(B, fit)
    rep_eta_sd = (fit.replicates @ B.T).std(axis=0, ddof=1)
    assert np.median(sd / rep_eta_sd) == pytest.approx(1.0, abs=0.1)


def test_choose_knots_refuses_a_constant_term():
    with pytest.raises(ValueError, match="spread"):
        F.choose_knots(np.full(10, 1.3), 8)
