"""The scene around the arc (off-centre hosts, morphologies, neighbours, stars), clumpy sources,
and the noise model: each piece against an independent computation."""

from __future__ import annotations

import copy
import dataclasses
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from scipy import stats

from dhs.params import ParamsError
from dhs.simulate import keyed
from dhs.simulate.config import SimConfig
from dhs.simulate.knots import GAUSS_HALF_LIGHT_PER_SIGMA, MAX_KNOTS, sample_knots
from dhs.simulate.morphology import ring, spiral_arms, tidal_tail
from dhs.simulate.noise import add_noise, lanczos_noise_filter, pixel_variance
from dhs.simulate.population import sample_population
from dhs.simulate.psf import PSFSpectra
from dhs.simulate.render import lensed_knots, lensed_sersic, oversample_for, render_profile
from dhs.simulate.scene import HOST_KINDS, Components, band_fluxes, sample_scene
from dhs.simulate.sersic import sersic_amp_from_total_flux
from dhs.simulate.sie import q_phi_to_e1e2
from dhs.simulate.survey import render_batches, render_noise_free, star_spectra

lenstronomy = pytest.importorskip("lenstronomy")
from lenstronomy.Data.imaging_data import ImageData  # noqa: E402
from lenstronomy.Data.psf import PSF  # noqa: E402
from lenstronomy.ImSim.image_model import ImageModel  # noqa: E402
from lenstronomy.LensModel.lens_model import LensModel  # noqa: E402
from lenstronomy.LightModel.light_model import LightModel  # noqa: E402

PIX = 0.262
PARAMS = yaml.safe_load(open("params.yaml"))["simulate"]


def t(x):
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def config(**over) -> SimConfig:
    p = copy.deepcopy(PARAMS)
    p["device"] = "cpu"
    p.update(over)
    return SimConfig.from_params(p)


def _lenstronomy_image(n_pix, kw_lens, light_models, kw_src, oversample=4):
    half = (n_pix - 1) / 2 * PIX
    data = ImageData(image_data=np.zeros((n_pix, n_pix)), ra_at_xy_0=-half, dec_at_xy_0=-half,
                     transform_pix2angle=np.array([[PIX, 0], [0, PIX]]))
    delta = np.zeros((3, 3))
    delta[1, 1] = 1.0
    model = ImageModel(data, PSF(psf_type="PIXEL", kernel_point_source=delta), lens_model_class=LensModel(["SIE", "SHEAR"]),
                       source_model_class=LightModel(light_models),
                       kwargs_numerics=dict(supersampling_factor=oversample, supersampling_convolution=False))
    return model.image(kw_lens, kw_src)


def _random_lens(rng, centre=True):
    return dict(theta_e=rng.uniform(0.6, 2.2), q=rng.uniform(0.4, 0.95), phi=rng.uniform(0, np.pi), g1=rng.normal(0, 0.05),
                g2=rng.normal(0, 0.05), cx=rng.uniform(-0.5, 0.5) if centre else 0.0, cy=rng.uniform(-0.5, 0.5) if centre else 0.0)


def _kw_lens(lens):
    e1, e2 = (v.item() for v in q_phi_to_e1e2(t(lens["q"]), t(lens["phi"])))
    return [dict(theta_E=lens["theta_e"], e1=e1, e2=e2, center_x=lens["cx"], center_y=lens["cy"]),
            dict(gamma1=lens["g1"], gamma2=lens["g2"], ra_0=lens["cx"], dec_0=lens["cy"])]


def _our_lens(lens, bx, by):
    return {"theta_e_arcsec": t([lens["theta_e"]]), "lens_q": t([lens["q"]]), "lens_phi_rad": t([lens["phi"]]),
            "shear_g1": t([lens["g1"]]), "shear_g2": t([lens["g2"]]), "src_x_arcsec": t([bx]), "src_y_arcsec": t([by]),
            "lens_x_arcsec": t([lens["cx"]]), "lens_y_arcsec": t([lens["cy"]])}


# ----------------------------------------------------------------------------- the lens follows the host
@pytest.mark.parametrize("seed", range(3))
def test_off_centre_lens_matches_lenstronomy(seed):
    """A lens centred off the stamp centre (the host's true position): ray shooting and sampling
    equal lenstronomy's with center_x/center_y (shear about the lens centre) to 1e-8 of the peak."""
    rng = np.random.default_rng(400 + seed)
    lens = _random_lens(rng)
    bx, by, reff, n, q, phi = 0.2, -0.15, 0.3, 1.2, 0.7, 0.4
    p = {**_our_lens(lens, bx, by), "src_reff_arcsec": t([reff]), "src_n": t([n]), "src_q": t([q]), "src_phi_rad": t([phi])}
    ours = render_profile(lensed_sersic, p, n_pix=64, pixel_scale_arcsec=PIX, oversample=4)[0].numpy()
    se1, se2 = (v.item() for v in q_phi_to_e1e2(t(q), t(phi)))
    amp = sersic_amp_from_total_flux(t(1.0), t(reff), t(n)).item()
    ref = _lenstronomy_image(64, _kw_lens(lens), ["SERSIC_ELLIPSE"],
                             [dict(amp=amp, R_sersic=reff, n_sersic=n, e1=se1, e2=se2, center_x=lens["cx"] + bx, center_y=lens["cy"] + by)])
    assert np.abs(ours - ref).max() < 1e-8 * ref.max()


# ----------------------------------------------------------------------------- knots
def _knot_params(rng, n_knots):
    p = {}
    w = rng.exponential(size=n_knots)
    w /= w.sum()
    for i in range(MAX_KNOTS):
        on = i < n_knots
        p[f"knot{i}_x_arcsec"] = t([rng.uniform(-0.3, 0.3)])
        p[f"knot{i}_y_arcsec"] = t([rng.uniform(-0.3, 0.3)])
        p[f"knot{i}_sigma_arcsec"] = t([rng.uniform(0.04, 0.1)])
        p[f"knot{i}_weight"] = t([w[i] if on else 0.0])
    return p


@pytest.mark.parametrize("seed", range(3))
def test_lensed_knots_match_lenstronomy_gaussians(seed):
    """Knots are Gaussians in the source plane: our lensed render equals lenstronomy's GAUSSIAN
    sources (amp = total flux) through the same off-centre SIE + shear, to 1e-8 of the peak."""
    rng = np.random.default_rng(500 + seed)
    lens = _random_lens(rng)
    bx, by = rng.uniform(-0.3, 0.3, 2)
    kp = _knot_params(rng, 5)
    ours = render_profile(lensed_knots, {**_our_lens(lens, bx, by), **kp}, n_pix=64, pixel_scale_arcsec=PIX, oversample=4)[0].numpy()
    kw = [dict(amp=kp[f"knot{i}_weight"].item(), sigma=kp[f"knot{i}_sigma_arcsec"].item(),
               center_x=lens["cx"] + bx + kp[f"knot{i}_x_arcsec"].item(), center_y=lens["cy"] + by + kp[f"knot{i}_y_arcsec"].item())
          for i in range(MAX_KNOTS)]
    ref = _lenstronomy_image(64, _kw_lens(lens), ["GAUSSIAN"] * MAX_KNOTS, kw)
    assert np.abs(ours - ref).max() < 1e-8 * ref.max()


def test_knots_conserve_flux_unlensed_and_keep_it_lensed():
    """Unlensed (theta_E = 0) the knots hold exactly their unit flux; lensed, the engine's
    sampling (raised for compact knots by ``oversample_for``) agrees with 32 x 32 sub-pixels."""
    rng = np.random.default_rng(11)
    B = 24
    u = rng.uniform(size=(B, 3 + 4 * MAX_KNOTS))
    every_source = dataclasses.replace(config().knot_config, fraction_of_sources=1.0)
    kp = sample_knots(u, rng.uniform(0.1, 0.5, B), rng.uniform(0.5, 1, B), rng.uniform(0, 3, B), every_source)
    assert np.all(kp.pop("flux_fraction") > 0)
    weights = np.stack([kp[f"knot{i}_weight"] for i in range(MAX_KNOTS)], 1)
    np.testing.assert_allclose(weights.sum(1), 1.0, rtol=1e-12)
    zero = np.zeros(B)
    base = {"lens_q": t(np.ones(B)), "lens_phi_rad": t(zero), "shear_g1": t(zero), "shear_g2": t(zero), "src_x_arcsec": t(zero),
            "src_y_arcsec": t(zero)}
    kpt = {k: t(v) for k, v in kp.items()}
    smallest = np.min([np.where(kp[f"knot{i}_weight"] > 0, kp[f"knot{i}_sigma_arcsec"], np.inf) for i in range(MAX_KNOTS)], axis=0)
    os_ = oversample_for(smallest * GAUSS_HALF_LIGHT_PER_SIGMA, PIX, 4)
    flat = torch.cat([render_profile(lensed_knots, {k: v[i: i + 1] for k, v in {**base, **kpt, "theta_e_arcsec": t(zero)}.items()},
                                     n_pix=64, pixel_scale_arcsec=PIX, oversample=int(os_[i])) for i in range(B)])
    np.testing.assert_allclose(flat.sum(dim=(1, 2)).numpy(), 1.0, rtol=1e-3)
    lensed = {**base, **kpt, "theta_e_arcsec": t(rng.uniform(0.8, 2.0, B)), "src_x_arcsec": t(rng.uniform(-0.3, 0.3, B)),
              "lens_q": t(rng.uniform(0.5, 1, B))}
    assert os_.min() >= 4 and os_.max() >= 8  # the narrowest knots get finer sampling
    fine = render_profile(lensed_knots, lensed, n_pix=64, pixel_scale_arcsec=PIX, oversample=32, threshold=0.0).sum(dim=(1, 2))
    ours = torch.cat([render_profile(lensed_knots, {k: v[i: i + 1] for k, v in lensed.items()}, n_pix=64, pixel_scale_arcsec=PIX,
                                     oversample=int(os_[i]), threshold=1e-3).sum(dim=(1, 2)) for i in range(B)])
    rel = ((ours - fine).abs() / fine).numpy()
    # a knot astride a caustic is the hardest case for any finite sampling: a few % there
    assert np.median(rel) < 1e-3 and np.quantile(rel, 0.9) < 5e-3 and rel.max() < 5e-2
    assert (fine > 1.5).all()  # magnified, never renormalised


@pytest.mark.parametrize("reff", [0.03, 0.05, 0.1, 0.3])
def test_compact_sources_get_enough_sub_pixels(reff):
    """4 x 4 loses 1-5% of the flux of a 0.03-0.05 arcsec source near the caustics; the engine's
    sampling for that size stays within ~1e-3 (median) of 32 x 32."""
    rng = np.random.default_rng(13)
    B = 32
    p = {"theta_e_arcsec": t(rng.uniform(0.8, 2.0, B)), "lens_q": t(rng.uniform(0.5, 1, B)), "lens_phi_rad": t(rng.uniform(0, 3, B)),
         "shear_g1": t(np.zeros(B)), "shear_g2": t(np.zeros(B)), "src_x_arcsec": t(rng.uniform(-0.5, 0.5, B)),
         "src_y_arcsec": t(rng.uniform(-0.5, 0.5, B)), "src_reff_arcsec": t(np.full(B, reff)), "src_n": t(np.ones(B)),
         "src_q": t(np.ones(B)), "src_phi_rad": t(np.zeros(B))}
    os_ = int(oversample_for(reff, PIX, 4))
    fine = render_profile(lensed_sersic, p, n_pix=64, pixel_scale_arcsec=PIX, oversample=32, threshold=0.0).sum(dim=(1, 2))
    ours = render_profile(lensed_sersic, p, n_pix=64, pixel_scale_arcsec=PIX, oversample=os_, threshold=1e-3).sum(dim=(1, 2))
    rel = ((ours - fine).abs() / fine).numpy()
    assert np.median(rel) < 3e-3 and rel.max() < 2e-2


# ----------------------------------------------------------------------------- morphologies
def _flux(profile, params, n_pix=160, os_=8):
    return render_profile(profile, {k: t([v]) for k, v in params.items()}, n_pix=n_pix, pixel_scale_arcsec=PIX, oversample=os_,
                          threshold=0.0)[0].sum().item()


@pytest.mark.parametrize("q", [1.0, 0.5])
def test_ring_and_spiral_arms_integrate_to_unit_flux(q):
    ring_p = dict(radius_arcsec=2.0, width_arcsec=0.2, q=q, phi_rad=0.3, lump_amplitude=0.6, lump_order=3.0, lump_phase_rad=1.0,
                  x_arcsec=0.3, y_arcsec=-0.2)
    assert _flux(ring, ring_p) == pytest.approx(1.0, rel=1e-3)
    arms_p = dict(reff_arcsec=1.5, q=q, phi_rad=0.7, n_arms=2.0, pitch_rad=math.radians(20), arm_phase_rad=0.5, sharpness=4.0,
                  x_arcsec=0.1, y_arcsec=0.2)
    assert _flux(spiral_arms, arms_p) == pytest.approx(1.0, rel=2e-3)


def test_tidal_tail_flux_follows_the_thin_stream_normalisation():
    p = dict(radius_arcsec=1.5, growth=0.25, width_arcsec=0.3, start_rad=0.4, direction=1.0, length_rad=2.5, fade_rad=2.0,
             x_arcsec=0.0, y_arcsec=0.0)
    assert _flux(tidal_tail, p) == pytest.approx(1.0, rel=0.02)


# ----------------------------------------------------------------------------- the scene
def _rows(n, seed=3):
    cfg = config(n_stamps=n)
    return cfg, sample_population(cfg)


def test_host_kinds_follow_the_mix_and_not_the_label():
    """The train split's kinds follow host_kinds_train (look-alikes oversampled), val and test
    follow host_kinds (sky rates); within each, the kind is independent of the label."""
    cfg, pop = _rows(6000)
    assert cfg.host_kinds_train and dict(cfg.host_kinds_train) != dict(cfg.host_kinds)
    sc = sample_scene(pop, cfg.scene, cfg.seed, grid_half_width_arcsec=12.6)
    kinds = pd.Series(sc.columns["host_kind"])
    train = pop["region_split"].to_numpy() == "train"
    for sel, mix in ((train, cfg.host_kinds_train), (~train, cfg.host_kinds)):
        want = pd.Series(mix) / sum(mix.values())
        k = kinds[sel]
        got = k.value_counts().reindex(want.index, fill_value=0)
        assert set(k) <= set(want.index)
        assert stats.chisquare(got, want * len(k)).pvalue > 1e-3
        table = pd.crosstab(k, pop["is_control"].to_numpy()[sel])
        assert stats.chi2_contingency(table).pvalue > 0.01  # pitfall 9: the kind is independent of the label
    for col in ("n_neighbours", "n_stars", "has_companion", "host_x_arcsec"):
        v = pd.Series(sc.columns[col])
        assert stats.ks_2samp(v[pop.is_control.to_numpy() == 1], v[pop.is_control.to_numpy() == 0]).pvalue > 0.01, col


def test_host_centres_are_sub_pixel_phase_plus_centroid_error():
    cfg, pop = _rows(8000)
    sc = sample_scene(pop, cfg.scene, cfg.seed, grid_half_width_arcsec=12.6)
    sigma = cfg.centring["centroid_error_arcsec"]
    # uniform(-s/2, s/2) + N(0, sigma) per axis: variance s^2/12 + sigma^2
    expected_sd = math.sqrt(PIX**2 / 12 + sigma**2)
    assert np.std(sc.host_x_arcsec) == pytest.approx(expected_sd, rel=0.04)
    assert np.std(sc.host_y_arcsec) == pytest.approx(expected_sd, rel=0.04)
    frac = (sc.host_x_arcsec / PIX) % 1.0
    assert stats.kstest(frac, "uniform").pvalue > 1e-3  # no preferred sub-pixel phase
    # the phase spans the survey's own pixel (simulate.pixel_scale_arcsec)
    cfg3 = config(n_stamps=400, pixel_scale_arcsec=0.5, centring={"subpixel": True, "centroid_error_arcsec": 0.0})
    sc3 = sample_scene(sample_population(cfg3), cfg3.scene, cfg3.seed, grid_half_width_arcsec=12.6)
    for offsets in (sc3.host_x_arcsec, sc3.host_y_arcsec):
        assert 0.2 < np.abs(offsets).max() <= 0.25
    # paired stamps share the scene (keyed by host)
    cfg2 = config(n_stamps=200, paired=True, extra_controls={})
    pop2 = sample_population(cfg2)
    sc2 = sample_scene(pop2, cfg2.scene, cfg2.seed, grid_half_width_arcsec=12.6)
    g = pd.DataFrame({"h": pop2.host_id, "x": sc2.host_x_arcsec, "n": sc2.columns["n_neighbours"]}).groupby("h").nunique()
    assert (g == 1).all().all()


def test_neighbour_and_star_numbers_follow_the_counts():
    cfg, pop = _rows(5000)
    half = 12.6
    sc = sample_scene(pop, cfg.scene, cfg.seed, grid_half_width_arcsec=half)
    nb = cfg.scene.neighbours
    area = (2 * half / 3600) ** 2
    lam = nb.density_r24_per_deg2_per_mag / (nb.slope_per_mag * math.log(10)) * (
        10 ** (nb.slope_per_mag * (nb.r_mag_max - 24)) - 10 ** (nb.slope_per_mag * (nb.r_mag_min - 24))) * area
    assert sc.columns["n_neighbours"].mean() == pytest.approx(lam, rel=0.05)
    assert sc.columns["n_stars"].mean() == pytest.approx(cfg.scene.stars.density_per_deg2 * area, rel=0.25)


def test_a_star_lands_on_its_position_with_its_flux():
    """Stars are band-limited deltas times the PSF: centroid and flux exact at any sub-pixel position."""
    M, fwhm = 96, torch.tensor([[1.1, 1.0, 0.95]], dtype=torch.float64)
    x, y = 1.37, -2.11
    stars = Components(np.array([0]), {"x_arcsec": np.array([x]), "y_arcsec": np.array([y])}, np.array([[2.0, 3.0, 4.0]]))
    spec = star_spectra(stars, 1, M, PIX, "cpu", torch.float64)
    psf = PSFSpectra.from_fwhm(fwhm, M, PIX)
    img = torch.fft.irfft2(spec * psf.spectra, s=(M, M))[0].numpy()
    np.testing.assert_allclose(img.sum(axis=(1, 2)), [2.0, 3.0, 4.0], rtol=1e-10)
    c = (np.arange(M) - (M - 1) / 2) * PIX
    X, Y = np.meshgrid(c, c)
    for b in range(3):
        assert (img[b] * X).sum() / img[b].sum() == pytest.approx(x, abs=1e-3)
        assert (img[b] * Y).sum() / img[b].sum() == pytest.approx(y, abs=1e-3)
        assert img[b].min() > -1e-4 * img[b].max()  # band-limited interpolation rings at ~1e-5 of the peak


def test_injection_lens_sits_on_the_host_not_the_stamp_centre():
    """The survey's arc equals the same lens and source rendered at the stamp centre and moved by
    the host's offset (a Fourier shift of the PSF-convolved image)."""
    cfg = config(n_stamps=48, paired=True, extra_controls={}, core_structures={}, failed_cutout_fraction=0.0, knots=None, noise={"photon_noise": False, "correlation": "none"},
                 dtype="float64", population="uniform")
    pop = sample_population(cfg)
    nf = render_noise_free(pop, cfg, torch.device("cpu"))
    inj = np.flatnonzero(pop.is_control.to_numpy() == 0)
    r = pop.iloc[inj]
    hx, hy = nf.scene_columns["host_x_arcsec"][inj], nf.scene_columns["host_y_arcsec"][inj]
    assert np.abs(np.hypot(hx, hy)).max() > 0.1  # the hosts really are off-centre
    src_q = (1 - r.src_e.to_numpy()) / (1 + r.src_e.to_numpy())
    p = {"theta_e_arcsec": r.theta_e_arcsec, "lens_q": r.lens_q, "lens_phi_rad": r.lens_phi_rad, "shear_g1": r.shear_g1,
         "shear_g2": r.shear_g2, "src_x_arcsec": r.src_x_arcsec, "src_y_arcsec": r.src_y_arcsec, "src_reff_arcsec": r.src_reff_arcsec,
         "src_n": r.src_sersic_n, "src_q": src_q, "src_phi_rad": r.src_phi_rad}
    unit = render_profile(lensed_sersic, {k: t(v) for k, v in p.items()}, n_pix=64, pixel_scale_arcsec=PIX, oversample=8, threshold=0.0)
    flux = band_fluxes(r.src_r_mag, r.src_g_minus_r, r.src_r_minus_z)
    fwhm = np.stack([r[f"psf_fwhm_used_{b}"] for b in "grz"], 1)
    centred = PSFSpectra.from_fwhm(t(fwhm), 64, PIX).convolve(unit, t(flux))
    fy = torch.fft.fftfreq(64, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(64, dtype=torch.float64)[None, :]
    shift = torch.exp(-2j * math.pi * (fy * t(hy / PIX)[:, None, None] + fx * t(hx / PIX)[:, None, None]))
    moved = torch.fft.irfft2(torch.fft.rfft2(centred) * shift[:, None], s=(64, 64)).numpy()
    ours = nf.arc.numpy()[inj]
    peak = np.abs(moved).reshape(len(inj), -1).max(axis=1)
    err_moved = np.abs(ours - moved).reshape(len(inj), -1).max(axis=1) / peak
    err_centred = np.abs(ours - centred.numpy()).reshape(len(inj), -1).max(axis=1) / peak
    assert err_moved.max() < 3e-2  # sampling differences only (engine vs 8 x 8, shift of a sampled image)
    off = np.hypot(hx, hy) > 0.1
    assert off.any() and (err_centred[off] > 3 * err_moved[off]).all() and np.median(err_centred[off]) > 20 * np.median(err_moved[off])


def test_paired_difference_is_the_arc_plus_its_own_photon_noise():
    cfg = config(n_stamps=64, paired=True, extra_controls={}, failed_cutout_fraction=0.0)
    pop = sample_population(cfg)
    batches = list(render_batches(pop, cfg))
    rows = pd.concat([b.rows for b in batches], ignore_index=True)
    img = np.concatenate([b.images for b in batches])
    nf = render_noise_free(pop, cfg, torch.device("cpu"))
    ctl, inj = rows.is_control.to_numpy() == 1, rows.is_control.to_numpy() == 0
    diff = img[inj] - img[ctl]
    arc = nf.arc.numpy()[inj]
    resid = (diff - arc)[:, 1]
    # the arc's photon noise: variance arc / gain, nothing where there is no arc light
    from dhs.simulate.survey import noise_inputs
    _, gain = noise_inputs(rows[inj], cfg)
    var = np.clip(arc[:, 1], 0, None) / gain[:, 1, None, None]
    lit = var > 1e-12
    z = resid[lit] / np.sqrt(var[lit])
    assert abs(z.std() - 1) < 0.2  # correlated by resampling, unit variance per pixel
    assert np.abs(resid[~lit]).max() < 1e-4


# ----------------------------------------------------------------------------- noise
def test_keyed_draws_depend_only_on_the_key():
    keys = keyed.stamp_keys(7, keyed.STREAM_SKY, np.arange(100))
    z = keyed.normals(keys, (3, 16, 16))
    sub = keyed.normals(keyed.stamp_keys(7, keyed.STREAM_SKY, np.arange(40, 45)), (3, 16, 16))
    assert torch.equal(z[40:45], sub)
    assert stats.kstest(z.numpy().ravel(), "norm").pvalue > 1e-3
    other = keyed.normals(keyed.stamp_keys(7, keyed.STREAM_ARC_PHOTONS, np.arange(100)), (3, 16, 16))
    assert abs(np.corrcoef(z.numpy().ravel(), other.numpy().ravel())[0, 1]) < 0.01
    u = keyed.uniforms(keys, (1000,)).numpy()
    assert u.min() > 0 and u.max() < 1 and stats.kstest(u.ravel(), "uniform").pvalue > 1e-3


def test_photon_noise_variance_is_sky_plus_signal_over_gain():
    B, N = 64, 32
    scene = torch.full((B, 3, N, N), 0.5, dtype=torch.float64)
    arc = torch.zeros_like(scene)
    sigma = torch.full((B, 3), 0.01, dtype=torch.float64)
    gain = torch.full((B, 3), 2000.0, dtype=torch.float64)
    model = dataclasses.replace(config().noise_model, photon_noise=True, correlation="none")
    noisy = add_noise(scene, arc, sigma, gain, torch.arange(B), 1, model)
    expected = 0.01**2 + 0.5 / 2000.0
    assert (noisy - scene).var().item() == pytest.approx(expected, rel=0.02)
    assert pixel_variance(scene, arc, sigma, gain, model)[0, 0, 0, 0].item() == pytest.approx(expected)


def test_resampling_correlation_keeps_the_pixel_variance_and_matches_its_spectrum():
    B, N = 128, 64
    model = dataclasses.replace(config().noise_model, photon_noise=False, correlation="lanczos3", n_exposures=3)
    zero = torch.zeros((B, 3, N, N), dtype=torch.float64)
    sigma = torch.full((B, 3), 0.005, dtype=torch.float64)
    noise = add_noise(zero, zero, sigma, None, torch.arange(B), 3, model).numpy()
    assert noise.std() == pytest.approx(0.005, rel=0.02)
    measured = np.mean(noise[..., :, 1:] * noise[..., :, :-1]) / noise.var()
    # prediction: the autocorrelation at lag (0, 1) of the filter's power spectrum, averaged over stamps
    phases = keyed.uniforms(keyed.stamp_keys(3, keyed.STREAM_RESAMPLING, torch.arange(B)), (3, 3, 2))
    power = lanczos_noise_filter(phases.double(), N) ** 2
    acf = torch.fft.irfft2(power, s=(N, N))
    predicted = (acf[..., 0, 1] / acf[..., 0, 0]).mean().item()
    assert 0.03 < predicted < 0.5
    assert measured == pytest.approx(predicted, abs=0.01)


def test_scene_config_rejects_unknown_kinds_and_keys():
    with pytest.raises(ParamsError, match=re.escape("unknown keys ['quasar'] in 'simulate.host_kinds'")):
        config(host_kinds={"lrg": 1.0, "quasar": 0.1})
    with pytest.raises(ParamsError, match=re.escape("unknown keys ['neighbors'] in 'simulate.fields' (did you mean 'neighbours'?)")):
        config(fields={"neighbors": {}})
    with pytest.raises(ParamsError, match="simulate.knots.sigma_arcsec must be"):
        config(knots={**PARAMS["knots"], "sigma_arcsec": [0.01, 0.05]})
    with pytest.raises(ParamsError, match="simulate.host_kinds_train must give at least one kind a frequency > 0"):
        config(host_kinds_train={"lrg": 0.0})
    with pytest.raises(ParamsError, match="simulate.core_structures must be fractions of the early-type hosts that sum to at most 1"):
        config(core_structures={"colour_gradient": 0.6, "blue_nucleus": 0.5})
    assert set(HOST_KINDS) >= set(PARAMS["host_kinds"])
    assert isinstance(config().scene.host_kinds, dict)
    assert config(pixel_scale_arcsec=0.2).scene.pixel_scale_arcsec == 0.2


def test_core_structures_keep_the_hosts_light_follow_their_fractions_and_not_the_label():
    """Each early-type host's core structure (simulate.core_structures) is drawn from its own keyed
    uniforms, independently of the label, at the configured fractions; the host's own light keeps
    its total (the structure takes its share, except an overlapping companion, which adds its own);
    a PSF mismatch broadens or narrows host and arc alike while the stated PSF stays."""
    cfg = config(n_stamps=4000, extra_controls={})
    frac = dict(cfg.core_structures)
    assert frac and sum(frac.values()) < 1
    pop = sample_population(cfg)
    sc = sample_scene(pop, cfg.scene, cfg.seed, grid_half_width_arcsec=12.6)
    core = pd.Series(sc.columns["core_kind"])
    early = np.isin(sc.columns["host_kind"], ("lrg", "lrg_tangential_companion", "lrg_alignment"))
    assert (core[~early] == "none").all() and (core[early] != "none").all()
    want = pd.Series({**frac, "smooth": 1 - sum(frac.values())})
    got = core[early].value_counts().reindex(want.index, fill_value=0)
    assert stats.chisquare(got, want / want.sum() * early.sum()).pvalue > 1e-3
    assert stats.chi2_contingency(pd.crosstab(core[early], pop["is_control"].to_numpy()[early])).pvalue > 0.01
    mism = sc.columns["psf_mismatch"]
    assert (mism[core != "psf_mismatch"] == 1).all()
    dev = np.abs(mism[core == "psf_mismatch"] - 1)
    assert ((dev >= 0.03 - 1e-12) & (dev <= 0.08 + 1e-12)).all()
    # light: every component of a host without a companion, before the PSF, adds up to the host's flux
    host_flux = band_fluxes(pop["host_r_mag"], pop["host_g_minus_r"], pop["host_r_minus_z"])[:, 1]
    bare = sample_scene(pop, dataclasses.replace(cfg.scene, neighbours=None, stars=None, companion_probability=0.0), cfg.seed,
                        grid_half_width_arcsec=12.6)   # the same hosts and cores without a field
    assert (bare.columns["core_kind"] == sc.columns["core_kind"]).all()
    r_flux = np.zeros(len(pop))
    for parts in bare.components.values():
        for p in parts:
            np.add.at(r_flux, p.stamp, p.flux[:, 1])
    np.add.at(r_flux, bare.stars.stamp, bare.stars.flux[:, 1])
    quiet = np.isin(sc.columns["host_kind"], ("lrg",)) & (core != "core_companion").to_numpy()
    assert quiet.sum() > 1000 and (core[quiet] != "smooth").sum() > 500
    np.testing.assert_allclose(r_flux[quiet], host_flux[quiet], rtol=1e-10)
    # the rendered stamp: a mismatched PSF moves the light, the stated FWHM stays in the table
    rows = pop.iloc[np.flatnonzero((core == "psf_mismatch").to_numpy())[:4]]
    nf = render_noise_free(rows, cfg, torch.device("cpu"))
    same = render_noise_free(rows, dataclasses.replace(cfg, core_structures={}), torch.device("cpu"))
    assert not np.allclose(nf.scene.numpy(), same.scene.numpy(), rtol=1e-3)
    np.testing.assert_allclose(nf.scene.numpy().sum(axis=(2, 3)), same.scene.numpy().sum(axis=(2, 3)), rtol=2e-2)
