"""The simulated survey: priors, splits, label-independent conditions, noise, pairing, determinism."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import yaml
from scipy import stats

from dhs.params import ParamsError
from dhs.simulate.config import SimConfig
from dhs.simulate.noise import sky_sigma_nmgy
from dhs.simulate.population import sample_population
from dhs.simulate.survey import render_batches, render_noise_free

PARAMS = yaml.safe_load(open("params.yaml"))["simulate"]


def config(**over) -> SimConfig:
    p = copy.deepcopy(PARAMS)
    p["device"] = "cpu"
    priors = over.pop("priors", {})
    p.update(over)
    p["priors"].update(priors)
    return SimConfig.from_params(p)


def render_all(cfg: SimConfig):
    batches = list(render_batches(sample_population(cfg), cfg))
    rows = __import__("pandas").concat([b.rows for b in batches], ignore_index=True)
    return rows, np.concatenate([b.images for b in batches])


def test_splits_are_region_disjoint_and_non_empty():
    cfg = config(n_stamps=3000, n_regions=40)
    pop = sample_population(cfg)
    splits_per_region = pop.groupby("region_id")["region_split"].nunique()
    assert splits_per_region.max() == 1
    n_regions = pop.groupby("region_split")["region_id"].nunique()
    assert set(n_regions.index) == {"train", "val", "test"}
    frac = cfg.split_fractions
    assert n_regions["val"] == round(frac["val"] * 40) and n_regions["test"] == round(frac["test"] * 40)
    assert n_regions["train"] == 40 - n_regions["val"] - n_regions["test"]
    # bricks belong to one region; host positions to one split
    assert pop.groupby("brickname")["region_id"].nunique().max() == 1
    assert pop.groupby(["ra", "dec"])["region_split"].nunique().max() == 1


def test_controls_and_injections_share_hosts_and_conditions():
    """Pitfall 9: the label is independent of host and conditions (two-sample KS tests), with the
    val and test controls on the hosts of lenses (``control_hosts: lens``) and no control-only
    stamps; with the defaults it holds in the train split (tests/simulate/test_population.py)."""
    pop = sample_population(config(n_stamps=6000, control_hosts="lens", extra_controls={}))
    ctl, inj = pop[pop.is_control == 1], pop[pop.is_control == 0]
    for col in ("psfsize_r", "psfdepth_r", "host_r_mag", "host_reff_arcsec", "bad_pixel_frac", "wise_brightmask_frac", "ebv"):
        assert stats.ks_2samp(ctl[col], inj[col]).pvalue > 0.01, col
    assert abs(len(ctl) / len(pop) - 0.5) < 0.03
    # controls carry zeros in every injection column
    for col in ("theta_e_arcsec", "src_dmag", "src_reff_arcsec", "src_x_arcsec", "shear", "lens_e"):
        assert (ctl[col] == 0).all(), col
    assert set(ctl.lens_model) == {"CONTROL"} and set(inj.lens_model) == {"SIE"}


def test_rendered_controls_and_injections_differ_only_by_the_arc():
    """With its own noise-free arc subtracted, an injection is statistically a control: the same
    host light and sky in the outer annulus. (Without the subtraction they can differ there:
    a bright arc's Moffat wings reach 20-30 px, as a real PSF's do.) Controls on the hosts of
    lenses (``control_hosts: lens``), as in the train split: the measurement's controls come from
    the search sample on purpose (tests/simulate/test_population.py)."""
    cfg = config(n_stamps=600, control_hosts="lens", extra_controls={})
    rows, img = render_all(cfg)
    arc = render_noise_free(rows, cfg, torch.device("cpu")).arc.numpy()
    ok = rows.cutout_ok.to_numpy() == 1
    yy, xx = np.indices(img.shape[-2:])
    r = np.hypot(yy - 31.5, xx - 31.5)
    outer = (img[:, 1] - arc[:, 1])[:, (r > 20) & (r < 30)].mean(axis=1)  # r band
    ctl, inj = outer[ok & (rows.is_control == 1)], outer[ok & (rows.is_control == 0)]
    assert stats.ks_2samp(ctl, inj).pvalue > 0.01
    assert np.all(arc[rows.is_control.to_numpy() == 1] == 0)


def test_conditions_follow_dr10_priors():
    pop = sample_population(config(n_stamps=4000, n_regions=400))
    assert pop.psfsize_r.between(0.8, 1.6).all()
    assert pop.psfsize_r.median() == pytest.approx(1.31, abs=0.05)
    q = pop.groupby("brickname").psfdepth_r.first().quantile([0.25, 0.5, 0.75]).to_numpy()
    np.testing.assert_allclose(q, [24.21, 24.46, 25.07], atol=0.08)
    np.testing.assert_allclose(pop.psf_fwhm_used_g / pop.psf_fwhm_used_r, 1.16)
    clean = ((pop.bad_pixel_frac <= 0.2) & (pop.wise_brightmask_frac <= 0.2)).mean()
    assert 0.82 < clean < 0.94  # DR10: 87.8% of stamps are clean


def test_blank_stamp_noise_matches_depth_formula():
    """A stamp with no host and no arc holds sky noise only; its per-pixel sigma per band is
    the depth formula's (within 5%)."""
    cfg = config(n_stamps=200, control_fraction=1.0, failed_cutout_fraction=0.0, priors={"host_r_mag": {"dist": "const", "value": 60.0}},
                 fields={}, population="uniform", host_kinds={"lrg": 1.0}, host_kinds_train=None, core_structures={})
    rows, img = render_all(cfg)
    for j, b in enumerate("grz"):
        expected = sky_sigma_nmgy(rows[f"psfdepth_{b}"], rows[f"psf_fwhm_used_{b}"])
        measured = img[:, j].reshape(len(rows), -1).std(axis=1)
        np.testing.assert_allclose(measured, expected, rtol=0.05)
        assert abs(np.mean(measured / expected) - 1) < 0.01


def test_paired_mode_differs_only_by_the_arc():
    """Without photon noise the difference is exactly the arc (with it, the arc plus its own
    photon noise: tests/test_scene.py)."""
    cfg = config(n_stamps=64, paired=True, extra_controls={}, failed_cutout_fraction=0.0, noise={"photon_noise": False, "correlation": "none"})
    rows, img = render_all(cfg)
    assert (rows.groupby("host_id").is_control.agg(sorted).map(tuple) == (0, 1)).all()
    ctl = img[rows.is_control.to_numpy() == 1]
    inj = img[rows.is_control.to_numpy() == 0]
    diff = inj - ctl
    # same host and same noise realisation: the difference is the (noise-free, positive) arc
    assert diff.min() > -1e-5
    injected_r = rows[rows.is_control == 0].total_injected_flux_r.to_numpy()
    np.testing.assert_allclose(diff[:, 1].sum(axis=(1, 2)), injected_r, rtol=1e-3)


def test_rendered_metrics_are_consistent():
    rows, img = render_all(config(n_stamps=300, failed_cutout_fraction=0.0))
    inj = rows[rows.is_control == 0]
    ctl = rows[rows.is_control == 1]
    assert (ctl[["arc_snr", "magnification", "total_injected_flux_r"]] == 0).all().all()
    # an extended source inside theta_E is magnified
    assert (inj.magnification > 1.5).mean() > 0.9
    # total injected r flux = magnification x source flux (minus what the PSF spreads off the stamp)
    src_flux = 10 ** (-0.4 * (inj.src_r_mag - 22.5))
    np.testing.assert_allclose(inj.total_injected_flux_r, inj.magnification * src_flux, rtol=0.02)
    assert (inj.arc_snr > 0).all()
    sigma_r = inj.sky_sigma_r_nmgy
    assert (inj.arc_snr <= inj.total_injected_flux_r / sigma_r).all()


def test_rendering_is_deterministic_and_batch_independent():
    cfg = config(n_stamps=40, failed_cutout_fraction=0.1)
    rows1, img1 = render_all(cfg)
    rows2, img2 = render_all(SimConfig.from_params({**PARAMS, "n_stamps": 40, "failed_cutout_fraction": 0.1, "device": "cpu", "batch_size": 7}))
    # each stamp's pixels depend on its own parameters only: up to FFT round-off, not on batching
    np.testing.assert_allclose(img1, img2, rtol=0, atol=1e-6 * np.abs(img1).max())
    rows3, img3 = render_all(cfg)
    np.testing.assert_array_equal(img1, img3)  # same config: bit-identical
    assert rows1.task_id.tolist() == rows2.task_id.tolist()
    failed = rows1.cutout_ok.to_numpy() == 0
    assert failed.any() and (img1[failed] == 0).all()


def test_96_pixel_stamps_and_grid_prior():
    cfg = config(n_stamps=20, stamp_size=96, population="uniform", priors={"theta_e_arcsec": {"dist": "grid", "values": [0.3, 0.6, 1.0]}})
    rows, img = render_all(cfg)
    assert img.shape[1:] == (3, 96, 96)
    assert set(rows[rows.is_control == 0].theta_e_arcsec.round(6)) <= {0.3, 0.6, 1.0}


@pytest.mark.parametrize(
    "over, match",
    [
        ({"n_stamp": 10}, "unknown keys \\['n_stamp'\\] in 'simulate' \\(did you mean 'n_stamps'\\?\\)"),
        ({"stamp_size": 63}, "simulate.stamp_size must be 64 or 96, got 63"),
        ({"psf_model": "airy"}, "simulate.psf_model must be one of"),
        ({"priors": {"theta_e_arcsec": {"dist": "uniform", "low": 2.0, "high": 1.0}}}, "low"),
        ({"priors": {"theta_e_arcsec": {"dist": "lognormal", "mu": 0}}}, "unknown dist"),
        ({"priors": {"src_r_mag": {"dist": "uniform", "low": 20}}}, "missing \\['high'\\]"),
        ({"priors": {"not_a_prior": {"dist": "const", "value": 1}}}, "unknown keys \\['not_a_prior'\\] in 'simulate.priors'"),
        ({"split_fractions": {"train": 0.7, "val": 0.2, "test": 0.2}}, "simulate.split_fractions must sum to 1"),
    ],
)
def test_bad_simulate_params_are_refused_with_a_message(over, match):
    p = copy.deepcopy(PARAMS)
    priors = over.pop("priors", None)
    p.update(over)
    if priors:
        p["priors"].update(priors)
    with pytest.raises(ParamsError, match=match):
        SimConfig.from_params(p)

