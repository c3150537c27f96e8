"""Validation statistics: the regions' dispersion is ~1 for independent draws and grows with a
region effect; the predictive band covers fractions drawn from the model itself."""

from __future__ import annotations

import numpy as np
import pytest

from dhs.evaluation.scores import sigmoid
from dhs.selection import fit as F
from dhs.selection.validate import region_dispersion, validate


def test_dispersion_is_one_for_independent_draws_and_grows_with_a_region_effect():
    rng = np.random.default_rng(0)
    n, g = 20000, 80
    region = rng.integers(0, g, n)
    p = rng.uniform(0.05, 0.6, n)
    iid = (rng.random(n) < p).astype(float)
    assert region_dispersion(p, iid, region)["phi"] == pytest.approx(1.0, abs=0.35)
    shift = rng.normal(0, 0.8, g)[region]                        # a shared logit offset per region
    clustered = (rng.random(n) < 1 / (1 + np.exp(-(np.log(p / (1 - p)) + shift)))).astype(float)
    assert region_dispersion(p, clustered, region)["phi"] > 3


def test_predictive_band_covers_fractions_drawn_from_the_model():
    rng = np.random.default_rng(1)
    n = 4000
    t = {"log10_snr_implied": rng.uniform(0, 2.5, n), "theta_e_over_psf": rng.uniform(0.2, 2.5, n)}
    d = F.design_for(t, 8, names=list(t))
    B = d.basis(t)
    eta = 2.5 * (t["log10_snr_implied"] - 1.2) + 0.5 * t["theta_e_over_psf"]
    score = 1 / (1 + np.exp(-(eta + rng.logistic(size=n))))
    region = rng.integers(0, 40, n)
    from dhs.evaluation.intervals import bootstrap_multiplicities
    cfg = F.FitConfig.from_params({"n_replicates": 30}, confidence=0.95)
    fit = F.fit_operating_point(d, B, score, region, np.zeros(1), np.zeros(1, int), 40, "x", None, 0.5, cfg,
                                bootstrap_multiplicities(40, 30, 0))
    # fresh outcomes from the fitted model itself, on new points: the predictive band must hold them
    t2 = {"log10_snr_implied": rng.uniform(0, 2.5, 3000), "theta_e_over_psf": rng.uniform(0.2, 2.5, 3000)}
    B2 = d.basis(t2)
    y2 = (rng.random(3000) < sigmoid(B2 @ fit.values)).astype(float)
    v = validate(B2, y2, t2, ("log10_snr_implied", "theta_e_over_psf"), fit, 0.95, 6, 25, 300, 0)
    assert v["n_bins_counted"] >= 12
    assert v["fraction_inside_predictive"] >= 0.85
    assert v["calibration"]["p_value"] > 0.001
