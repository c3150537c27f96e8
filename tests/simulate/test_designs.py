"""The three populations (dhs.simulate.designs): lessons are lens-like, the measurement
population's weights take it back to the sky exactly, and the visibility kernels agree with
direct computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from dhs.params import load_params, section
from dhs.params.schema import TILT_VARIABLES
from dhs.simulate import physical
from dhs.params import ParamsError
from dhs.simulate.config import SimConfig
from dhs.simulate.designs import (TILT_EDGES, LessonsConfig, MeasurementConfig, effective_sample_size, lessons, measurement, tilt,
                                  tilt_tables)
from dhs.simulate.detectability import detectable_lenspop
from dhs.simulate.visibility import lenspop_criteria, matched_filter_snr, mu_reff_over_psf

PARAMS = section(load_params(), "simulate")
PHYS = SimConfig.from_params({**PARAMS, "device": "cpu"}).physical_params


def test_tilt_variables_are_the_ones_the_designs_can_flatten():
    assert set(TILT_VARIABLES) == set(TILT_EDGES)


def test_lessons_are_lens_like_and_flat_in_theta_e():
    cfg = LessonsConfig(mu_min=5.0, theta_e_arcsec=(0.6, 2.4), flat_theta_e=True, theta_e_bins=9)
    s = lessons(3600, np.random.default_rng(1), PHYS, cfg)
    assert len(s) == 3600
    assert (s.mu_ext_sis >= 5.0).all()
    assert s.theta_e_arcsec.between(0.6, 2.4).all()
    counts = np.histogram(s.theta_e_arcsec, np.linspace(0.6, 2.4, 10))[0]
    assert counts.min() >= 0.9 * 400 and counts.max() <= 1.1 * 400
    # the sky itself is nothing like it: most systems are weakly magnified and small
    sky = physical.sample(20000, np.random.default_rng(2), PHYS)
    assert (sky.mu_ext_sis >= 5).mean() < 0.3 and np.median(sky.theta_e_arcsec) < np.median(s.theta_e_arcsec)
    # deterministic given the generator
    assert lessons(3600, np.random.default_rng(1), PHYS, cfg).equals(s)


def test_measurement_weights_take_the_tilted_draw_back_to_the_sky():
    """Weighted means under the tilted draw equal the sky's (within a few standard errors), while
    the unweighted ones do not; the tilt puts many more rows where the sky has few."""
    cfg = MeasurementConfig(flatten=("theta_e_arcsec", "src_r_mag"), strength=0.75, floor=0.02)
    m, w = measurement(20000, np.random.default_rng(3), PHYS, cfg, seed=5)
    sky = physical.sample(60000, np.random.default_rng(4), PHYS)
    assert len(m) == len(w) == 20000 and np.isclose(w.mean(), 1.0) and (w > 0).all()
    n_eff = effective_sample_size(w)
    assert 0.05 * len(w) < n_eff < len(w)
    for f in (lambda d: d.theta_e_arcsec > 1.5, lambda d: d.src_r_mag < 24.0, lambda d: d.theta_e_arcsec):
        sky_mean = float(np.mean(f(sky)))
        v = f(m).to_numpy(float)
        wmean = float(np.sum(w * v) / np.sum(w))
        se = float(np.sqrt(np.var(f(sky)) / len(sky) + np.var(v) / n_eff))
        assert abs(wmean - sky_mean) < 4 * se, (wmean, sky_mean, se)
    assert (m.theta_e_arcsec > 1.5).mean() > 2 * (sky.theta_e_arcsec > 1.5).mean()
    assert (m.src_r_mag < 24).mean() > 2 * (sky.src_r_mag < 24).mean()
    # the weight is 1 / g exactly: proportional to the inverse of the tilt function
    g = tilt(m, tilt_tables(PHYS, cfg, 5))
    np.testing.assert_allclose(w * g, (w * g)[0], rtol=1e-12)


def test_population_config_refuses_bad_designs():
    base = {**PARAMS, "device": "cpu"}
    with pytest.raises(ParamsError, match="simulate.measurement.flatten must be"):
        SimConfig.from_params({**base, "measurement": {"flatten": ["host_r_mag"]}})
    with pytest.raises(ParamsError, match="simulate.lessons.mu_min must be >= 1"):
        SimConfig.from_params({**base, "lessons": {"mu_min": 0.5}})
    with pytest.raises(ParamsError, match="simulate.control_hosts must be one of"):
        SimConfig.from_params({**base, "control_hosts": "random"})
    with pytest.raises(ParamsError, match="unknown keys \\['holdout'\\] in 'simulate.extra_controls'"):
        SimConfig.from_params({**base, "extra_controls": {"holdout": 1.0}})


def test_matched_filter_snr_is_the_optimal_filter_snr():
    """For a Gaussian blob on flat noise the matched-filter S/N has a closed form:
    F / (sigma sqrt(4 pi s^2)) in pixels (s the blob's sigma), and it adds in quadrature."""
    n, s, flux, sigma = 64, 2.5, 300.0, 1.7
    yy, xx = np.indices((n, n)) - (n - 1) / 2
    blob = flux * np.exp(-(xx**2 + yy**2) / (2 * s * s)) / (2 * np.pi * s * s)
    arc = torch.tensor(np.stack([blob, 2 * blob, np.zeros_like(blob)])[None])
    var = torch.full_like(arc, sigma**2)
    snr = matched_filter_snr(arc, var)[0].numpy()
    expected = flux / (sigma * np.sqrt(4 * np.pi * s * s))
    np.testing.assert_allclose(snr, [expected, 2 * expected, 0.0], rtol=1e-6)
    # a noise realisation filtered with the template has the predicted scatter
    rng = np.random.default_rng(0)
    t = blob / np.sqrt((blob**2).sum())
    z = [(t * (blob + rng.normal(0, sigma, blob.shape))).sum() / sigma for _ in range(2000)]
    assert np.mean(z) == pytest.approx(expected, rel=0.02) and np.std(z) == pytest.approx(1.0, rel=0.06)


def test_lenspop_criteria_match_the_detectability_module_and_their_definition():
    rng = np.random.default_rng(9)
    n = 4000
    df = pd.DataFrame({"theta_e_arcsec": rng.uniform(0.2, 2.5, n), "src_reff_arcsec": rng.uniform(0.02, 0.8, n),
                       "src_beta_arcsec": rng.uniform(0, 0.3, n)})
    mu, seeing, snr = rng.uniform(1, 20, n), rng.uniform(0.8, 1.8, n), rng.uniform(0, 60, n)
    c = lenspop_criteria(df.theta_e_arcsec, df.src_reff_arcsec, seeing, mu, snr)
    det = detectable_lenspop(df, seeing_arcsec=seeing, magnification=mu, snr={"g": snr, "r": snr, "z": snr})
    multiple = df.src_beta_arcsec < df.theta_e_arcsec
    np.testing.assert_array_equal(det.detectable.to_numpy(), c["discoverable"] & multiple)
    th, rs = df.theta_e_arcsec.to_numpy(), df.src_reff_arcsec.to_numpy()
    by_hand = (th**2 > rs**2 + (seeing / 2) ** 2) & (mu > 3) & (mu * rs > seeing / 2) & (snr > 20)
    np.testing.assert_array_equal(c["discoverable"], by_hand)
    assert 0.05 < by_hand.mean() < 0.6
    np.testing.assert_allclose(mu_reff_over_psf(mu, rs, seeing), mu * rs / seeing)
