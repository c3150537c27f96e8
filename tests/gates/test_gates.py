"""Shortcut and leakage gates (issue #8) and the preprocessing options that help pass them.

Synthetic stamps here are built in nMgy with DR10-like numbers (sky sigma 0.003 / 0.005 /
0.012 nMgy in g / r / z, a round PSF-blurred host of a few nMgy): a *leaky* injection adds a
compact blob at the centre (arc light blurred into the core), a *clean* one adds an arc segment
at 10-12 px and nothing central. The model-based gates are exercised with real scoring
functions on real pixels: two hand-built detectors (one reads the core, one reads an annulus)
and, end to end, a small CNN trained for a few steps on the simulated cache.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from tests.conftest import REPO
from dhs.gates.config import GatesConfig
from dhs.gates.core import core_masked_gate, core_only_gate, mask_core
from dhs.gates.metadata import metadata_gate
from dhs.gates.pixels import normalised
from dhs.gates.probes import psf_fwhm_grz, render_ring_and_arc, ring_probe_gate
from dhs.gates.result import tally_verdicts
from dhs.gates.shuffle import annulus_shuffle, shuffle_gate
from dhs.gates.splits import host_keys, split_integrity_gate
from dhs.imaging.centring import subtract_radial_profile_about_host
from dhs.models.loader import NormConfig, core_dropout, iterate_batches, normalize, preprocess_from_params, subtract_radial_profile
from dhs.params import ParamsError
from dhs.params.schema import SECTIONS
from dhs.params.views import frozen
from dhs.runner import EXIT_GATE_FAILED
from dhs.simulate.config import SimConfig
from dhs.imaging.geometry import annulus_table, core_mask, radius_px

SIZE = 64
SKY = np.array([0.003, 0.005, 0.012])
R = radius_px(SIZE)
ANGLE = np.arctan2(*np.indices((SIZE, SIZE)) - (SIZE - 1) / 2)
CFG = GatesConfig.from_params({"n_bootstrap": 50})
SURVEY = SimConfig.from_params(yaml.safe_load(open(REPO / "params.yaml"))["simulate"])   # what the probes render with


# --- synthetic stamps ------------------------------------------------------------------------

def _host(rng, n):
    """Round hosts: a PSF-blurred exponential-ish profile, total r flux U(3, 6) nMgy, red colours."""
    flux = rng.uniform(3, 6, n)
    scale = rng.uniform(2.5, 3.5, n)
    prof = (1 + (R[None] / scale[:, None, None]) ** 2) ** -2.5
    prof /= prof.sum(axis=(1, 2), keepdims=True)
    colour = np.array([0.35, 1.0, 1.8])
    return flux[:, None, None, None] * colour[None, :, None, None] * prof[:, None]


def _arc_segment(rng, n, radius=(10, 12)):
    """Arc segments at radius 10-12 px spanning 70-120 degrees, r flux U(1.5, 3) nMgy, bluer than the host."""
    r0 = rng.uniform(*radius, n)
    phi0 = rng.uniform(-np.pi, np.pi, n)
    half = np.radians(rng.uniform(35, 60, n))
    dphi = np.angle(np.exp(1j * (ANGLE[None] - phi0[:, None, None])))
    img = np.exp(-0.5 * ((R[None] - r0[:, None, None]) / 1.0) ** 2) * np.exp(-0.5 * (dphi / half[:, None, None]) ** 4)
    img /= img.sum(axis=(1, 2), keepdims=True)
    flux = rng.uniform(1.5, 3, n)
    return flux[:, None, None, None] * np.array([0.6, 1.0, 1.3])[None, :, None, None] * img[:, None]


def _core_blob(rng, n):
    """A compact central blob (sigma 1.5 px), r flux U(1, 2) nMgy: injected light in the core."""
    img = np.exp(-0.5 * (R / 1.5) ** 2)
    img = img / img.sum()
    flux = rng.uniform(1.0, 2.0, n)
    return flux[:, None, None, None] * np.array([0.6, 1.0, 1.3])[None, :, None, None] * img[None, None]


def synth(kind: str, n_per_class: int, seed: int):
    """(images nMgy float32, labels, meta): n controls and n injections of ``kind`` leaky | clean."""
    rng = np.random.default_rng(seed)
    n = 2 * n_per_class
    y = np.r_[np.zeros(n_per_class), np.ones(n_per_class)].astype(int)
    img = _host(rng, n) + rng.standard_normal((n, 3, SIZE, SIZE)) * SKY[None, :, None, None]
    inj = y == 1
    img[inj] += _core_blob(rng, inj.sum()) if kind == "leaky" else _arc_segment(rng, inj.sum())
    meta = pd.DataFrame({"task_id": [f"{kind}-{seed}-{i}" for i in range(n)], "is_control": 1 - y,
                         **{f"sky_sigma_{b}_nmgy": np.full(n, s) for b, s in zip("grz", SKY)},
                         **{f"psf_fwhm_used_{b}": np.full(n, f) for b, f in zip("grz", (1.5, 1.3, 1.25))}})
    return img.astype(np.float32), y, meta


# real detectors on real pixels: one reads the core, one the annulus where clean arcs live
def core_detector(images, meta=None):
    m = core_mask(SIZE, 3.0)
    return np.concatenate([x[:, 1][:, m].sum(axis=1) for _, x in normalised(images, NormConfig.from_params({}))])


def annulus_detector(images, meta=None):
    """Total normalised r light with 8 <= floor(r) < 14: a union of whole annuli, so exactly
    unchanged by the annulus shuffle (a pure radial-flux detector)."""
    m = (annulus_table(SIZE).bin_of_pixel.reshape(SIZE, SIZE) >= 8) & (annulus_table(SIZE).bin_of_pixel.reshape(SIZE, SIZE) < 14)
    return np.concatenate([x[:, 1][:, m].sum(axis=1) for _, x in normalised(images, NormConfig.from_params({}))])


def morphology_detector(images, meta=None):
    """Peak of the 5x5-box-smoothed normalised r image over 6 <= r <= 16 px: a compact arc gives
    a high peak, the same light scattered around its annulus does not."""
    out = []
    ring = (R >= 6) & (R <= 16)
    for _, x in normalised(images, NormConfig.from_params({})):
        t = torch.nn.functional.avg_pool2d(torch.from_numpy(x[:, 1:2]), 5, stride=1, padding=2)[:, 0].numpy()
        out.append(t[:, ring].max(axis=1))
    return np.concatenate(out)


def full_ring_detector(images, meta=None):
    """Responds to complete rings only: the faintest of 8 angular sectors of the 2-8 px annulus."""
    sectors = [(R >= 2) & (R <= 8) & (np.floor((ANGLE + np.pi) / (np.pi / 4)) % 8 == k) for k in range(8)]
    out = []
    for _, x in normalised(images, NormConfig.from_params({})):
        out.append(np.min([x[:, 1][:, s].mean(axis=1) for s in sectors], axis=0) * 50)
    return np.concatenate(out)


def inner_flux_detector(images, meta=None):
    """Total normalised r light at 2-8 px, whatever its shape."""
    m = (R >= 2) & (R <= 8)
    return np.concatenate([x[:, 1][:, m].sum(axis=1) / 200 for _, x in normalised(images, NormConfig.from_params({}))])


# --- core-only gate ----------------------------------------------------------------------------

def test_core_only_gate_fails_a_leaky_dataset_and_passes_a_clean_one():
    xtr, ytr, _ = synth("leaky", 150, 1)
    xte, yte, _ = synth("leaky", 100, 2)
    leaky = core_only_gate(xtr, ytr, xte, yte, NormConfig.from_params({}), CFG)
    assert leaky["status"] == "FAIL" and leaky["value"] > 0.9, leaky["detail"]
    assert leaky["n_core_pixels"] == 80 and "core alone" in leaky["detail"]
    xtr, ytr, _ = synth("clean", 150, 3)
    xte, yte, _ = synth("clean", 100, 4)
    clean = core_only_gate(xtr, ytr, xte, yte, NormConfig.from_params({}), CFG)
    assert clean["status"] == "PASS" and clean["value"] < 0.65, clean["detail"]
    lo, hi = clean["auc_ci95"]
    assert lo <= clean["value"] <= hi and lo < 0.5 + 0.15


def test_core_only_gate_skips_with_too_few_rows():
    x, y, _ = synth("clean", 5, 1)
    r = core_only_gate(x, y, x, y, NormConfig.from_params({}), CFG)
    assert r["status"] == "SKIP" and r["passed"] is False and "5 positive train and 5 negative train rows" in r["detail"]
    assert "gates.min_rows_per_class" in r["detail"] and "raise gates.core_n_train" in r["detail"]


# --- core-masked gate --------------------------------------------------------------------------

def test_mask_core_replaces_only_the_core_with_sky_noise():
    x, _, meta = synth("leaky", 50, 5)
    level = np.zeros((len(x), 3))
    out = mask_core(x, 5.0, level, np.tile(SKY, (len(x), 1)), np.random.default_rng(0))
    m = core_mask(SIZE, 5.0)
    assert np.array_equal(out[..., ~m], x[..., ~m])
    core = out[..., m]  # (N, 3, 80): pure sky noise now
    np.testing.assert_allclose(core.std(axis=(0, 2)), SKY, rtol=0.05)
    assert abs(core.mean()) < 1e-3 and not np.shares_memory(out, x)


def test_core_masked_gate_fails_a_core_reader_and_passes_an_annulus_reader():
    x, y, meta = synth("leaky", 100, 6)
    bad = core_masked_gate(core_detector, x, y, meta, CFG, SURVEY.pixel_scale_arcsec)
    assert bad["status"] == "FAIL" and bad["auc_before"] > 0.8 and bad["auc_after"] < 0.65, bad["detail"]
    assert "all injections used" in bad["subset"]
    x, y, meta = synth("clean", 100, 7)
    good = core_masked_gate(annulus_detector, x, y, meta, CFG, SURVEY.pixel_scale_arcsec)
    assert good["status"] == "PASS" and good["auc_before"] > 0.95 and abs(good["value"]) < 0.02, good["detail"]


def test_core_masked_gate_is_measured_on_arcs_that_clear_the_core():
    x, y, meta = synth("clean", 60, 8)
    theta = np.zeros(len(y))
    theta[y == 1] = np.r_[np.full(30, 0.5), np.full(30, 2.5)]
    meta["theta_e_arcsec"] = theta
    r = core_masked_gate(annulus_detector, x, y, meta, CFG, SURVEY.pixel_scale_arcsec)
    # 5 px x 0.262 + 0.5 x 1.3 arcsec = 1.96 arcsec: only the theta_E = 2.5 injections count
    assert r["n_injections"] == 30 and r["n_injections_all"] == 60


# --- ring probe --------------------------------------------------------------------------------

def test_ring_and_arc_probes_have_the_requested_peak_and_the_same_flux_and_colour():
    n = 12
    fwhm = np.tile([1.5, 1.3, 1.25], (n, 1))
    sky_r = np.linspace(0.003, 0.008, n)
    cfg = GatesConfig.from_params({"ring_peak_sigma": 3.0, "ring_radius_arcsec": 1.2})
    ring, arc, params = render_ring_and_arc(fwhm, sky_r, SIZE, cfg, np.random.default_rng(0), SURVEY)
    np.testing.assert_allclose(ring[:, 1].reshape(n, -1).max(axis=1), 3.0 * sky_r, rtol=1e-9)
    flux_ring, flux_arc = ring.sum(axis=(2, 3)), arc.sum(axis=(2, 3))
    np.testing.assert_allclose(flux_arc, flux_ring, rtol=1e-9)  # every band
    np.testing.assert_allclose(flux_ring[:, 0] / flux_ring[:, 1], 10 ** (-0.4 * params["src_g_minus_r"].to_numpy()[:n]), rtol=1e-9)
    # the ring is centred and round; its light peaks near R = 1.2 arcsec = 4.6 px
    w = ring[0, 1]
    yy, xx = np.indices(w.shape)
    assert abs((w * yy).sum() / w.sum() - 31.5) < 1e-6 and abs((w * xx).sum() / w.sum() - 31.5) < 1e-6
    prof = np.bincount(annulus_table(SIZE).bin_of_pixel, w.reshape(-1)) / annulus_table(SIZE).counts
    assert 3 <= int(np.argmax(prof)) <= 5
    # the arc is not round: the same light is more concentrated, so its peak is usually higher
    assert np.median(arc[:, 1].reshape(n, -1).max(axis=1) / ring[:, 1].reshape(n, -1).max(axis=1)) > 1.0
    assert params["theta_e_arcsec"].eq(1.2).all()


def test_psf_falls_back_to_psfsize_r_and_refuses_stamps_without_one():
    meta = pd.DataFrame({"psf_fwhm_used_g": [np.nan, 1.2], "psf_fwhm_used_r": [np.nan, 1.1], "psf_fwhm_used_z": [0.0, 1.0],
                         "psfsize_r": [1.3, 1.3], "task_id": ["a", "b"]})
    np.testing.assert_allclose(psf_fwhm_grz(meta, SURVEY), [[1.3 * 1.16, 1.3, 1.3 * 0.96], [1.2, 1.1, 1.0]])
    with pytest.raises(ValueError, match="no usable PSF FWHM.*'c'"):
        psf_fwhm_grz(pd.DataFrame({"psfsize_r": [np.nan], "task_id": ["c"]}), SURVEY)


def test_ring_probe_flags_a_ring_lover_and_passes_a_flux_detector():
    x, y, meta = synth("clean", 40, 9)
    ctl, mc = x[y == 0], meta[y == 0].reset_index(drop=True)
    cfg = GatesConfig.from_params({"ring_peak_sigma": 4.0, "n_bootstrap": 200})
    fair = ring_probe_gate(inner_flux_detector, ctl, mc, cfg, SURVEY)
    assert fair["status"] == "PASS" and fair["median_logit_shift_ring"] > 0.1, fair["detail"]
    # decided on the bootstrap interval of the excess over the 40 probed controls
    lo, hi = fair["value_ci95"]
    assert lo <= fair["value"] <= hi < cfg.ring_max_excess_logit and fair["decision"] == "inside" and fair["n"] == 40
    # equal flux in the same annulus: a flux detector moves the same for both
    assert fair["median_logit_shift_ring"] == pytest.approx(fair["median_logit_shift_arc"], rel=0.2)
    biased = ring_probe_gate(full_ring_detector, ctl, mc, cfg, SURVEY)
    assert biased["status"] == "FAIL" and biased["value_ci95"][0] > cfg.ring_max_excess_logit, biased["detail"]


# --- annulus shuffle ---------------------------------------------------------------------------

def test_annulus_shuffle_keeps_every_annulus_pixel_multiset_and_the_colour_of_each_pixel():
    x, _, _ = synth("clean", 4, 10)
    out = annulus_shuffle(x, np.random.default_rng(0))
    t = annulus_table(SIZE)
    flat_in, flat_out = x.reshape(8, 3, -1), out.reshape(8, 3, -1)
    for k in range(t.n_annuli):
        pix = t.index[k, : t.counts[k]]
        assert np.array_equal(np.sort(flat_in[..., pix], axis=-1), np.sort(flat_out[..., pix], axis=-1)), k
    # hence the radial flux profile is exactly the same
    prof = lambda a: np.stack([np.bincount(t.bin_of_pixel, a[i, b].reshape(-1)) for i in range(8) for b in range(3)])  # noqa: E731
    np.testing.assert_array_equal(prof(x.astype(np.float64)), prof(out.astype(np.float64)))
    # one permutation for all bands: each output pixel is one input pixel with all its colours
    key_in = {tuple(v) for v in flat_in[0].T}
    assert all(tuple(v) in key_in for v in flat_out[0].T)
    assert (out != x).mean() > 0.9
    assert np.array_equal(out, annulus_shuffle(x, np.random.default_rng(0)))


def test_shuffle_gate_fails_a_radial_flux_detector_and_passes_a_morphology_detector():
    x, y, meta = synth("clean", 100, 11)
    inj, ctl = x[y == 1], x[y == 0]
    for det, expect in ((annulus_detector, "FAIL"), (morphology_detector, "PASS")):
        cl = det(ctl)
        thr = float(np.quantile(cl, 0.99, method="higher"))
        r = shuffle_gate(det, inj, meta[y == 1], cl, CFG, thr, probe_controls=(ctl, meta[y == 0], cl))
        assert r["status"] == expect, (det.__name__, r["detail"])
        assert r["n_detected"] >= 50
    # the radial detector barely tells them apart: the same scores up to the normalisation
    # statistics (the sky annulus starts at 20.8 px, inside integer annulus 20, which is shuffled)
    assert r["auc_shuffled_controls_vs_controls"] is not None
    flat = annulus_detector(inj)
    np.testing.assert_allclose(annulus_detector(annulus_shuffle(inj, np.random.default_rng(3))), flat, rtol=0.05)


# --- split integrity ---------------------------------------------------------------------------

def _metas():
    def split(name, regions, ra0):
        n = 6
        return pd.DataFrame({"task_id": [f"{name}-{i}" for i in range(n)], "region_id": np.repeat(regions, n // len(regions)),
                             "ra": ra0 + np.arange(n) * 0.01, "dec": np.full(n, -10.0), "host_id": np.arange(n) + int(ra0 * 100)})
    return {"train": split("train", [1, 2], 10.0), "val": split("val", [3], 20.0), "test": split("test", [4], 30.0)}


def test_split_integrity_passes_disjoint_splits_and_catches_each_planted_leak():
    assert split_integrity_gate(_metas())["status"] == "PASS"
    m = _metas()
    m["test"].loc[2, "task_id"] = "train-4"  # a duplicate task_id across splits
    r = split_integrity_gate(m)
    assert r["status"] == "FAIL" and r["duplicate_task_ids"] == 1 and r["examples"]["task_ids"] == ["train-4"]
    m = _metas()
    m["val"].loc[0, "region_id"] = 2  # a region in train and val
    r = split_integrity_gate(m)
    assert r["status"] == "FAIL" and r["regions_in_two_splits"] == 1 and r["examples"]["regions"] == {"2": ["train", "val"]}
    m = _metas()
    m["test"].loc[1, ["ra", "dec"]] = [m["train"].loc[3, "ra"] + 0.1 / 3600, -10.0]  # the same host, 0.1 arcsec off
    r = split_integrity_gate(m)
    assert r["status"] == "FAIL" and r["host_positions_in_two_splits"] == 1 and r["regions_in_two_splits"] == 0
    m = _metas()
    m["val"] = m["val"].drop(columns="ra")
    assert "lacks column(s) ['ra']" in split_integrity_gate(m)["detail"]


def test_host_keys_are_the_contract_validators(sim_dataset):
    from dhs.contract.validate import validate_file

    shard = sorted(sim_dataset.rglob("*.parquet"))[0]
    res = validate_file(str(shard), str(sim_dataset), check_pixels=False)
    df = pd.read_parquet(shard, columns=["ra", "dec"])
    np.testing.assert_array_equal(host_keys(df["ra"].to_numpy(), df["dec"].to_numpy()), res.host_keys)


# --- metadata gate and the result record -------------------------------------------------------

def test_metadata_gate_reads_the_baseline_leak_auc(tmp_path):
    p = tmp_path / "baseline.json"
    p.write_text(json.dumps({"leak": {"auc_test": 0.52, "auc_test_ci95": [0.49, 0.55]}}))
    assert metadata_gate(p, CFG)["status"] == "PASS"
    p.write_text(json.dumps({"leak": {"auc_test": 0.71}}))
    r = metadata_gate(p, CFG)
    assert r["status"] == "FAIL" and r["value"] == 0.71 and "different conditions" in r["detail"]
    r = metadata_gate(tmp_path / "missing.json", CFG)
    assert r["status"] == "SKIP" and "dvc repro baseline" in r["detail"]
    assert tally_verdicts([r])["all_passed"] is False  # SKIP is not a pass


def test_gates_params_refuse_unknown_keys_and_bad_values():
    defaults = dataclasses.asdict(GatesConfig.from_params({}))
    assert defaults == {k: frozen(f.default) for k, f in SECTIONS["gates"].fields.items()}
    with pytest.raises(ParamsError, match=r"unknown keys \['core_auc'\]"):
        GatesConfig.from_params({"core_auc": 0.7})
    with pytest.raises(ParamsError, match="enforce must be true or false"):
        GatesConfig.from_params({"enforce": "yes"})
    with pytest.raises(ParamsError, match="core_auc_max is an AUC threshold"):
        GatesConfig.from_params({"core_auc_max": 1.5})
    with pytest.raises(ParamsError, match="n_probe must be an integer"):
        GatesConfig.from_params({"n_probe": 2.5})


# --- preprocessing options -----------------------------------------------------------------------

def test_radial_profile_subtraction_removes_a_round_host_and_keeps_an_arc():
    from dhs.simulate.psf import convolve_periodic, psf_kernels

    r = torch.from_numpy(R)
    host = torch.exp(-7.669 * ((r.clamp_min(0.05) / 4.0) ** 0.25 - 1))  # de Vaucouleurs, R_e 4 px
    k = psf_kernels(torch.tensor([1.31], dtype=torch.float64), SIZE, 0.262)[0]
    host = convolve_periodic(host[None], k[None])[0].float()
    res = subtract_radial_profile(host.expand(1, 3, SIZE, SIZE))
    assert float(res.abs().max() / host.max()) < 0.01  # the round host is gone to < 1% of its peak
    arc = torch.from_numpy(_arc_segment(np.random.default_rng(0), 1)[0]).float()
    res = subtract_radial_profile(host[None, None] * 1e-2 + arc[None])
    on_arc = arc[1] > 0.2 * arc[1].max()
    assert float(res[0, 1][on_arc].sum() / arc[1][on_arc].sum()) > 0.95  # the arc survives


def test_radial_profile_option_in_normalize_and_old_params_and_checkpoints_still_load():
    x, _, _ = synth("clean", 3, 12)
    x = torch.from_numpy(x)
    before = x.clone()
    plain = normalize(x, NormConfig.from_params(dict(clip=1e9)))
    sub = normalize(x, NormConfig.from_params(dict(clip=1e9, radial_profile_subtract=True, radial_profile_centre="stamp")))
    np.testing.assert_allclose(sub.numpy(), subtract_radial_profile(plain).numpy(), atol=1e-4)
    about_host = normalize(x, NormConfig.from_params(dict(clip=1e9, radial_profile_subtract=True)))  # the default: about the measured host centre
    np.testing.assert_allclose(about_host.numpy(), subtract_radial_profile_about_host(plain).numpy(), atol=1e-4)
    inner = torch.from_numpy(R <= 2)
    assert float(sub[..., inner].abs().median()) < 0.2 * float(plain[..., inner].abs().median())  # the host core is gone
    assert torch.equal(x, before)  # normalize never modifies its input (also with stored stats)
    stats = torch.zeros(len(x), 7)
    stats[:, 3:] = 0.005
    normalize(x, NormConfig.from_params({}), stats)
    assert torch.equal(x, before)
    # params and checkpoints written before the new keys existed
    norm, augment = preprocess_from_params({"mode": "annulus_common", "clip": 20.0, "augment": True})
    assert norm == NormConfig.from_params({}) and not norm.radial_profile_subtract and norm.core_dropout_p == 0.0 and augment is True
    old_ckpt_norm = {"mode": "annulus_common", "clip": 20.0, "annulus_inner_frac": 0.65, "annulus_outer_frac": 1.0}
    assert NormConfig.from_params(dict(**old_ckpt_norm)) == NormConfig.from_params({})
    norm, _ = preprocess_from_params({"radial_profile_subtract": True, "core_dropout_p": 0.5, "core_dropout_radius_px": 4})
    assert norm.radial_profile_subtract and norm.core_dropout_p == 0.5
    for bad, msg in (({"radial_profile_subtract": "yes"}, "true or false"), ({"core_dropout_p": 1.5}, "probability"),
                     ({"core_dropout_radius_px": 0}, "> 0 pixels")):
        with pytest.raises(ValueError, match=msg):
            preprocess_from_params(bad)


def test_core_dropout_replaces_the_core_with_sky_like_noise_in_training_only(sim_cache, tmp_path):
    from dhs.imaging.cache import open_split
    from dhs.models.registry import build_model
    from dhs.models.spec import ModelSpec
    from dhs.finder.training import evaluate

    split = open_split(sim_cache, "train")
    rows = np.arange(16)
    on = NormConfig.from_params(dict(core_dropout_p=1.0, core_dropout_radius_px=5.0))
    plain = next(iterate_batches(split, rows, 16, NormConfig.from_params({})))[0]
    train_x = next(iterate_batches(split, rows, 16, on, generator=torch.Generator().manual_seed(0), training=True))[0]
    eval_x = next(iterate_batches(split, rows, 16, on))[0]
    m = torch.from_numpy(core_mask(SIZE, 5.0))
    assert torch.equal(eval_x, plain)  # evaluation and inference never see it
    assert torch.equal(train_x[..., ~m], plain[..., ~m]) and not torch.equal(train_x[..., m], plain[..., m])
    core = train_x[..., m]  # sky-like: centred near 0 with the annulus's robust sigma, no host core
    assert float(core.mean().abs()) < 0.2 and 0.5 < float(core[:, 1].std()) < 2.0
    assert float(plain[..., m][:, 1].mean()) > 5 * float(core[:, 1].mean().abs() + 0.1)
    half = core_dropout(plain, NormConfig.from_params(dict(core_dropout_p=0.5)), torch.Generator().manual_seed(1))
    changed = (half != plain).flatten(1).any(dim=1)
    assert 0 < int(changed.sum()) < 16
    assert torch.equal(half, core_dropout(plain, NormConfig.from_params(dict(core_dropout_p=0.5)), torch.Generator().manual_seed(1)))
    # evaluate() (the validation pass of the training loop) gives identical results with or without it
    model = build_model(ModelSpec("small_cnn", SIZE)).eval()
    val = open_split(sim_cache, "val")
    a = evaluate(model, val, NormConfig.from_params({}), torch.device("cpu"), 64, None, False)
    b = evaluate(model, val, on, torch.device("cpu"), 64, None, False)
    assert a == b
    # ... while the training loop applies it: same seed and steps, different weights
    from dhs.models.checkpoint import load_checkpoint
    from dhs.finder.training import TrainConfig, train

    cfg = TrainConfig.from_params({"epochs": 1, "steps_per_epoch": 2, "batch_size": 16, "warmup_steps": 1, "device": "cpu"}, "small_cnn")
    weights = []
    for name, norm in (("off", NormConfig.from_params({})), ("on", on)):
        train(cfg, sim_cache, tmp_path / name, norm, augment=False, progress=False)
        ckpt = load_checkpoint(tmp_path / name / "checkpoint_last.pt")
        weights.append(ckpt["model"])
        assert json.loads(ckpt["norm"])["core_dropout_p"] == norm.core_dropout_p  # recorded with the model
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


# --- the stage, end to end on a tiny trained model -----------------------------------------------

@pytest.fixture(scope="module")
def tiny_model(sim_cache, tmp_path_factory):
    from dhs.finder.training import TrainConfig, train

    models = tmp_path_factory.mktemp("models")
    cfg = TrainConfig.from_params({"epochs": 1, "steps_per_epoch": 3, "batch_size": 16, "warmup_steps": 1, "eval_batch_size": 64,
                                   "device": "cpu"}, "small_cnn")
    train(cfg, sim_cache, models / "small_cnn", NormConfig.from_params({}), augment=False, progress=False)
    return models


def _params(tmp_path, **gates):
    p = yaml.safe_load(open(REPO / "params.yaml"))
    p["gates"] = {"n_eval": 0, "n_probe": 20, "min_rows_per_class": 20, "n_bootstrap": 0, "core_n_train": 0, "device": "cpu", **gates}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(p))
    return path


def test_stage_writes_metrics_and_figure_and_enforce_stops_on_a_failing_gate(sim_cache, tiny_model, tmp_path, capsys):
    from dhs.models.checkpoint import load_checkpoint
    from dhs.imaging.cache import open_split
    from stages.gates import main

    base = tmp_path / "baseline.json"
    base.write_text(json.dumps({"leak": {"auc_test": 0.9}}))  # a leaky baseline: the metadata gate fails
    common = ["--arch", "small_cnn", "--cache", str(sim_cache), "--models", str(tiny_model), "--baseline", str(base),
              "--metrics", str(tmp_path / "m"), "--plots", str(tmp_path / "p"), "--completeness", str(tmp_path / "no-completeness"),
              "--memo", str(tmp_path / "memo")]
    # without enforce the stage reports the failure and goes on
    rc = main(["--params", str(_params(tmp_path)), *common])
    out = capsys.readouterr()
    assert rc == 0 and "metadata_only     FAIL <<<" in out.out and "GATES FAILED" in out.out and "not stopping" in out.err
    calls = re.search(r"(\d+) of (\d+) scoring calls read back", out.out)
    assert calls and calls.group(1) == "0" and int(calls.group(2)) >= 8, out.out[-2000:]
    assert "gates: shift (0.5, 0.5) px, 1 of 5" in out.out          # the long phase says where it is
    metrics = json.loads((tmp_path / "m" / "small_cnn.json").read_text())
    assert metrics["all_passed"] is False and metrics["gates"]["metadata_only"]["status"] == "FAIL"
    assert set(metrics["gates"]) == {"core_only", "metadata_only", "core_masked", "ring_probe", "annulus_shuffle", "shift", "split_integrity"}
    assert metrics["gates"]["split_integrity"]["status"] == "PASS"
    assert metrics["gates"]["ring_probe"].get("n_probed") == 20, metrics["gates"]["ring_probe"]
    assert metrics["n_eval"] == len(open_split(sim_cache, "test"))
    assert (tmp_path / "p" / "small_cnn.png").stat().st_size > 10_000
    # enforce: the same failure stops the stage; the finder, stamps and probes are the same, so every
    # score is read back from the last run and every gate's value is the same
    rc = main(["--params", str(_params(tmp_path, enforce=True)), *common])
    out = capsys.readouterr()
    assert rc == EXIT_GATE_FAILED and "gates.enforce is true: stopping" in out.err
    assert f"{calls.group(2)} of {calls.group(2)} scoring calls read back" in out.out, out.out[-2000:]
    again = json.loads((tmp_path / "m" / "small_cnn.json").read_text())
    assert {k: g["value"] for k, g in again["gates"].items()} == {k: g["value"] for k, g in metrics["gates"].items()}
    # another finder (other weights) scores everything anew
    other = tmp_path / "other_models"
    shutil.copytree(tiny_model, other)
    ck = load_checkpoint(other / "small_cnn" / "checkpoint_best.pt")
    ck["model"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in ck["model"].items()}
    torch.save(ck, other / "small_cnn" / "checkpoint_best.pt")
    main(["--params", str(_params(tmp_path)), *[str(other) if a == str(tiny_model) else a for a in common]])
    assert f"0 of {calls.group(2)} scoring calls read back" in capsys.readouterr().out
    # unknown params never run
    rc = main(["--params", str(_params(tmp_path, core_auc=0.7)), *common])
    assert rc == 2 and "unknown keys ['core_auc']" in capsys.readouterr().err
