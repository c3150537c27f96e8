"""Transfer check: score an independently rendered DR10-like stamp set with a
trained finder at its shipped operating thresholds.

    python benchmarks/transfer_check.py --project-root /work/main [--arch small_cnn] [--n 2000] [--out transfer.json]

What it does, in order:

1. **Renders** ``--n`` 64x64 grz stamps with lenstronomy, never with ``dhs.simulate``: elliptical
   Sersic LRG hosts (n 3-5, R_e 0.6-2.5", q 0.5-1, r 18-21, g-r 1.6-1.9, r-z 0.9-1.3) centred,
   as a cutout centred on a catalogue position has it, at pixel (32, 32) (0-indexed pixel
   centres; the geometric stamp centre is 31.5) plus a Gaussian catalogue-centroid error
   (``--centroid-err-arcsec`` per axis); optional faint neighbours. Half of the stamps
   (``--control-frac``) are controls; the rest carry an SIE + external shear (lenstronomy's
   conventions, centred on the host's true centre) lensing a Sersic source (n 0.5-2, R_e
   0.1-0.5", unlensed r 22-26, g-r 0.2-0.6, r-z 0.1-0.5) with a few small Gaussian clumps.
   The surface brightness is sampled by lenstronomy's ImageModel (``--supersampling`` sub-pixels
   per side) and convolved per band with a pixel PSF kernel by lenstronomy's convolution:
   Moffat beta 3.5 built here, or lenstronomy's GAUSSIAN kernel (``--psf``), FWHM g = 1.16 r,
   z = 0.96 r. Noise: sky per pixel from the 5-sigma depth (docs/conventions.md:
   sigma = F5 / (5 sqrt(4 pi s^2)), F5 = 10^(-0.4 (m5 - 22.5)) nMgy, s = FWHM / 2.3548 / 0.262 px;
   m5_g = psfdepth_r + 0.8, m5_z = psfdepth_r - 0.9) plus Poisson noise of host and arc with an
   effective gain ``--gain`` e-/nMgy (default 10,000: DECam's r zero point is ~26.5 mag for
   1 e-/s, so 1 nMgy gives ~40 e-/s, times ~250 s of coadded exposure at typical DR10 depth).
2. **Writes** the set in the stamp contract: Hive-partitioned parquet
   ``region_split=<split>/part-*.parquet``, ``stamp_npz`` from ``numpy.savez_compressed``, every
   contract column filled (controls carry 0 in the injection columns). The split column lives in
   the directory name only, as Spark's ``partitionBy`` writes it (``--split-column`` also writes
   it into the files). Regions are split-disjoint; every split present is cached and scored (a
   one-split set, ``--split-fractions test=1``, is an evaluation-only set: the finder never saw
   any of them).
3. **Stages** that directory through the project's real-data path exactly as ``stages/stamps.py``
   does for a local-directory source (``stage`` -> ``validate`` -> ``link_tree`` -> rejection-rate
   check -> ``build_cache``) into a temporary directory, never into the project's ``data/``.
4. **Scores** the cache with ``<project-root>/data/models/<arch>/checkpoint_best.pt`` and its own
   normalisation (``load_trained``, ``score_split``, ``score_table``).
5. **Prints** the control false-positive rate at the shipped thresholds of
   ``<project-root>/metrics/completeness/<arch>.json`` (pass = score > threshold), with k/n,
   Wilson 95% intervals and the ratio to the nominal FPR; completeness per arc-SNR bin beside the
   project's own (recomputed from ``data/scores/<arch>.parquet`` in the same bins when it exists,
   else read from ``plots/completeness/<arch>/arc_snr.csv`` when the bins agree); and AUROC.
   ``--out`` writes every figure as JSON.

Everything is seeded (``--seed``): stamp i's parameters and noise come from their own streams,
so the pixels, the metadata and the scores do not depend on ``--workers``. (The npz bytes carry
the zip timestamps that numpy writes, as real Phase 4c data does.)

``arc_snr`` is the peak-pixel SNR of the noise-free r-band arc after the PSF,
max(arc_r / sqrt(sigma_sky_r^2 + arc_r / gain)) (the project's definition, with the arc's own shot
noise); ``magnification`` the lensed source flux inside the stamp before the PSF over the
unlensed source flux; ``total_injected_flux_r`` the r-band arc flux inside the stamp after the
PSF. Re-render at the project's own centring with ``--host-centre-px 31.5 --centroid-err-arcsec 0``
to separate the centring effect from everything else.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import math
import shutil
import sys
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

# --- every import from the project in one block ---
from dhs import atomic
from dhs.imaging.cache import CacheError, build_cache, cache_manifest, open_split
from dhs.contract.validate import DatasetInvalid, list_shards, validate
from dhs.models.checkpoint import load_trained
from dhs.models.inference import score_split
from dhs.evaluation.intervals import wilson_interval
from dhs.evaluation.scores import score_table
from dhs.stamps.staging import StagingError, link_tree, stage
from dhs.models.checkpoint import TrainingError
# ----------------------------------------------------------------------------------------------

PIX = 0.262          # arcsec / pixel (DR10)
ZP = 22.5            # AB zero point of the nanomaggy
BANDS = ("g", "r", "z")
SPLITS = ("train", "val", "test")
DEFAULT_SNR_BINS = [0.0, 2.0, 5.0, 8.0, 20.0, 50.0, math.inf]
FPR_SLACK = 1.5      # the FPR at each threshold should stay within 1.5x of nominal


class TransferError(RuntimeError):
    """The project's real-data path refused the set (or an input is missing); names the step."""


# =============================================================================== the stamp set

def mag_to_nmgy(m):
    return 10.0 ** (-0.4 * (np.asarray(m, dtype=np.float64) - ZP))


def sky_sigma_nmgy(m5: float, fwhm_arcsec: float) -> float:
    """Per-pixel sky sigma from a 5-sigma point-source depth and a Gaussian PSF (docs/conventions.md)."""
    s = fwhm_arcsec / 2.3548 / PIX
    return float(mag_to_nmgy(m5) / (5.0 * math.sqrt(4.0 * math.pi * s * s)))


def moffat_kernel(fwhm_arcsec: float, beta: float, oversample: int = 9, max_half: int = 25) -> np.ndarray:
    """A centred, odd-sized Moffat kernel integrated over each pixel (``oversample``^2 points),
    half-width ceil(3 FWHM) px (at most ``max_half``), normalised to sum 1."""
    fwhm_px = fwhm_arcsec / PIX
    half = int(min(max_half, math.ceil(3.0 * fwhm_px)))
    n = 2 * half + 1
    alpha = fwhm_px / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    c = (np.arange(n * oversample) + 0.5) / oversample - n / 2.0
    yy, xx = np.meshgrid(c, c, indexing="ij")
    k = (1.0 + (xx * xx + yy * yy) / (alpha * alpha)) ** (-beta)
    k = k.reshape(n, oversample, n, oversample).sum(axis=(1, 3))
    return k / k.sum()


def psf_kernel(fwhm_arcsec: float, kind: str, beta: float) -> np.ndarray:
    if kind == "moffat":
        return moffat_kernel(fwhm_arcsec, beta)
    from lenstronomy.Data.psf import PSF

    k = np.asarray(PSF(psf_type="GAUSSIAN", fwhm=fwhm_arcsec, pixel_size=PIX, truncation=5).kernel_point_source, dtype=np.float64)
    return k / k.sum()


def _u(rng, lo_hi):
    lo, hi = lo_hi
    return float(rng.uniform(lo, hi))


def draw_stamp(i: int, is_control: bool, cfg: dict) -> dict:
    """Every random parameter of stamp ``i`` from its own streams (independent of workers): one
    for conditions and host, one for neighbours, one for lens and source, so that changing the
    centring or the neighbour density leaves every other draw (and the noise) of the stamp alone:
    variants of a run are paired stamp by stamp."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg["seed"], i, 0, 0]))
    rng_nb = np.random.default_rng(np.random.SeedSequence([cfg["seed"], i, 0, 1]))
    rng_ls = np.random.default_rng(np.random.SeedSequence([cfg["seed"], i, 0, 2]))
    p: dict = {"index": i, "is_control": bool(is_control)}
    p["psf_r"] = _u(rng, cfg["psf_fwhm_r"])
    p["depth_r"] = _u(rng, cfg["psfdepth_r"])
    p["ebv"] = float(np.exp(rng.uniform(np.log(0.01), np.log(0.10))))
    # host: true centre = catalogue position (stamp pixel origin_px) + centroid error (+ jitter)
    err = rng.normal(0.0, 1.0, 2) * cfg["centroid_err_arcsec"]
    jit = rng.uniform(-0.5, 0.5, 2) * cfg["subpixel_jitter_px"] * PIX
    off = (cfg["host_centre_px"] - cfg["origin_px"]) * PIX
    p["host_x"], p["host_y"] = off + float(err[0] + jit[0]), off + float(err[1] + jit[1])
    p["host_n"] = _u(rng, cfg["host_n"])
    p["host_reff"] = _u(rng, cfg["host_reff"])
    p["host_q"] = _u(rng, cfg["host_q"])
    p["host_phi"] = float(rng.uniform(0.0, np.pi))
    p["host_r"] = _u(rng, cfg["host_r"])
    p["host_gr"] = _u(rng, cfg["host_gr"])
    p["host_rz"] = _u(rng, cfg["host_rz"])
    # optional faint neighbours anywhere in the stamp but the host's core
    neigh = []
    rng = rng_nb
    for _ in range(int(rng.poisson(cfg["neighbours_mean"])) if cfg["neighbours_mean"] > 0 else 0):
        half = cfg["stamp_size"] / 2.0 * PIX
        while True:
            x, y = rng.uniform(-half, half, 2)
            if math.hypot(x - p["host_x"], y - p["host_y"]) > cfg["neighbour_min_sep_arcsec"]:
                break
        neigh.append({"x": float(x), "y": float(y), "n": _u(rng, (0.5, 2.5)), "reff": _u(rng, (0.2, 0.8)),
                      "q": _u(rng, (0.3, 1.0)), "phi": float(rng.uniform(0, np.pi)), "r": _u(rng, cfg["neighbour_r"]),
                      "gr": _u(rng, (0.3, 1.8)), "rz": _u(rng, (0.2, 1.0))})
    p["neighbours"] = neigh
    rng = rng_ls
    if not is_control:
        p["theta_e"] = _u(rng, cfg["theta_e"])
        p["lens_q"] = _u(rng, cfg["lens_q"])
        p["lens_phi"] = float((p["host_phi"] + rng.normal(0.0, np.deg2rad(10.0))) % np.pi)  # mass follows light
        g1, g2 = rng.normal(0.0, cfg["shear_sd"], 2)
        p["g1"], p["g2"] = float(g1), float(g2)
        beta = cfg["beta_max_frac"] * p["theta_e"] * math.sqrt(rng.uniform(0.0, 1.0))  # uniform in a disc
        ang = rng.uniform(0.0, 2.0 * np.pi)
        p["src_dx"], p["src_dy"] = float(beta * np.cos(ang)), float(beta * np.sin(ang))
        p["src_r"] = _u(rng, cfg["src_r"])
        p["src_gr"] = _u(rng, cfg["src_gr"])
        p["src_rz"] = _u(rng, cfg["src_rz"])
        p["src_n"] = _u(rng, cfg["src_n"])
        p["src_reff"] = _u(rng, cfg["src_reff"])
        p["src_q"] = _u(rng, cfg["src_q"])
        p["src_phi"] = float(rng.uniform(0.0, np.pi))
        nc = min(int(rng.poisson(cfg["clumps_mean"])), cfg["clumps_max"]) if cfg["clumps_mean"] > 0 else 0
        frac = _u(rng, cfg["clump_flux_frac"]) if nc else 0.0
        w = rng.dirichlet(np.ones(nc)) if nc else np.zeros(0)
        p["clumps"] = [{"dx": float(rng.normal(0, p["src_reff"])), "dy": float(rng.normal(0, p["src_reff"])),
                        "sigma": _u(rng, cfg["clump_sigma"]), "frac": float(frac * w[k])} for k in range(nc)]
        p["clump_frac"] = frac
    return p


def _ell(phi: float, q: float) -> tuple[float, float]:
    from lenstronomy.Util.param_util import phi_q2_ellipticity

    e1, e2 = phi_q2_ellipticity(phi, q)
    return float(e1), float(e2)


def _colour_factors(gr: float, rz: float) -> np.ndarray:
    """Flux in g, r, z over flux in r for observed colours g-r and r-z."""
    return np.array([10.0 ** (-0.4 * gr), 1.0, 10.0 ** (0.4 * rz)])


def render_stamp(p: dict, cfg: dict, mode: str | None = None) -> tuple[np.ndarray, dict, dict]:
    """-> (images (3, S, S) float32 nMgy with noise, contract/metric columns, noise-free parts).

    mode "shared": lenstronomy's ImageModel samples each component's surface brightness once
    (``supersampling`` sub-pixels per side, re-binned to pixels, no PSF) and lenstronomy's
    PixelKernelConvolution applies each band's kernel (every component has one colour, so the
    bands differ only by amplitude and PSF). mode "per_band": one ImageModel per band with that
    band's PIXEL PSF (ray tracing repeated per band), the literal path; the two agree to rounding.
    """
    from lenstronomy.Data.imaging_data import ImageData
    from lenstronomy.Data.psf import PSF
    from lenstronomy.ImSim.image_model import ImageModel
    from lenstronomy.ImSim.Numerics.convolution import PixelKernelConvolution
    from lenstronomy.LensModel.lens_model import LensModel
    from lenstronomy.LightModel.light_model import LightModel

    mode = mode or cfg["render_mode"]
    S, pad, ss = cfg["stamp_size"], cfg["pad_px"], cfg["supersampling"]
    o = cfg["origin_px"]  # stamp pixel of angle (0, 0): the catalogue position
    numerics = {"supersampling_factor": ss, "supersampling_convolution": False}

    def grid(n_pix: int, margin: int) -> ImageData:
        return ImageData(image_data=np.zeros((n_pix, n_pix)), ra_at_xy_0=-(margin + o) * PIX, dec_at_xy_0=-(margin + o) * PIX,
                         transform_pix2angle=np.array([[PIX, 0.0], [0.0, PIX]]))

    big, small = grid(S + 2 * pad, pad), grid(S, 0)
    fwhm = p["psf_r"] * np.array(cfg["psf_ratio"])
    kernels = [psf_kernel(f, cfg["psf"], cfg["moffat_beta"]) for f in fwhm]
    crop = (slice(pad, pad + S), slice(pad, pad + S))

    # --- unlensed light: host + neighbours (lens light), each with its own colour
    comps = [{"x": p["host_x"], "y": p["host_y"], "n": p["host_n"], "reff": p["host_reff"], "q": p["host_q"], "phi": p["host_phi"],
              "r": p["host_r"], "gr": p["host_gr"], "rz": p["host_rz"]}, *p["neighbours"]]
    ll_model = LightModel(["SERSIC_ELLIPSE"] * len(comps))
    kw_ll = []
    for c in comps:
        e1, e2 = _ell(c["phi"], c["q"])
        kw_ll.append({"amp": 1.0, "R_sersic": c["reff"], "n_sersic": c["n"], "e1": e1, "e2": e2, "center_x": c["x"], "center_y": c["y"]})
    norms = ll_model.total_flux(kw_ll, norm=True)  # total flux at amp = 1 (amp is the surface brightness at R_sersic)
    for kw, c, nrm in zip(kw_ll, comps, norms):
        kw["amp"] = float(mag_to_nmgy(c["r"]) / nrm)
    fac_ll = np.stack([_colour_factors(c["gr"], c["rz"]) for c in comps])  # (components, bands)

    lensed = not p["is_control"]
    if lensed:
        lx, ly = p["host_x"], p["host_y"]
        e1, e2 = _ell(p["lens_phi"], p["lens_q"])
        kw_lens = [{"theta_E": p["theta_e"], "e1": e1, "e2": e2, "center_x": lx, "center_y": ly},
                   {"gamma1": p["g1"], "gamma2": p["g2"], "ra_0": lx, "dec_0": ly}]
        sx, sy = lx + p["src_dx"], ly + p["src_dy"]
        se1, se2 = _ell(p["src_phi"], p["src_q"])
        src_model = LightModel(["SERSIC_ELLIPSE"] + ["GAUSSIAN"] * len(p["clumps"]))
        kw_src = [{"amp": 1.0, "R_sersic": p["src_reff"], "n_sersic": p["src_n"], "e1": se1, "e2": se2, "center_x": sx, "center_y": sy}]
        kw_src += [{"amp": 1.0, "sigma": c["sigma"], "center_x": sx + c["dx"], "center_y": sy + c["dy"]} for c in p["clumps"]]
        f_src = float(mag_to_nmgy(p["src_r"]))
        fracs = [1.0 - p["clump_frac"]] + [c["frac"] for c in p["clumps"]]
        for kw, frac, nrm in zip(kw_src, fracs, src_model.total_flux(kw_src, norm=True)):
            kw["amp"] = f_src * frac / nrm  # analytic normalisation in the source plane; never renormalised after lensing
        fac_src = _colour_factors(p["src_gr"], p["src_rz"])
        lens_model = LensModel(["SIE", "SHEAR"])

    host = np.zeros((3, S, S))
    arc = np.zeros((3, S, S))
    if mode == "shared":
        im_ll = ImageModel(big, PSF(psf_type="NONE"), lens_light_model_class=ll_model, kwargs_numerics=numerics)
        unconv = [im_ll.lens_surface_brightness(kw_ll, unconvolved=True, k=j) for j in range(len(comps))]
        if lensed:
            im_src = ImageModel(small, PSF(psf_type="NONE"), lens_model_class=lens_model, source_model_class=src_model, kwargs_numerics=numerics)
            arc_unconv_r = im_src.source_surface_brightness(kw_src, kw_lens, unconvolved=True)
        for b in range(3):
            # one convolution object per grid: 'fft_static' keeps the FFT set up for the first shape it sees
            host[b] = PixelKernelConvolution(kernels[b], convolution_type="fft_static").convolution2d(
                sum(fac_ll[j, b] * unconv[j] for j in range(len(comps))))[crop]
            if lensed:
                arc[b] = PixelKernelConvolution(kernels[b], convolution_type="fft_static").convolution2d(fac_src[b] * arc_unconv_r)
    elif mode == "per_band":
        for b in range(3):
            psf = PSF(psf_type="PIXEL", kernel_point_source=kernels[b])
            kw_b = [{**kw, "amp": kw["amp"] * fac_ll[j, b]} for j, kw in enumerate(kw_ll)]
            host[b] = ImageModel(big, psf, lens_light_model_class=ll_model, kwargs_numerics=numerics).image(kwargs_lens_light=kw_b)[crop]
            if lensed:
                kw_sb = [{**kw, "amp": kw["amp"] * fac_src[b]} for kw in kw_src]
                im_src = ImageModel(small, psf, lens_model_class=lens_model, source_model_class=src_model, kwargs_numerics=numerics)
                arc[b] = im_src.image(kwargs_lens=kw_lens, kwargs_source=kw_sb)
                if b == 1:
                    arc_unconv_r = im_src.image(kwargs_lens=kw_lens, kwargs_source=kw_sb, unconvolved=True)
    else:
        raise ValueError(f"render mode must be shared or per_band, got {mode!r}")

    # --- noise: sky from the depth, Poisson of host + arc with the effective gain
    # (shot noise and sky from separate streams: the sky noise of a stamp is the same in every variant)
    rng_shot = np.random.default_rng(np.random.SeedSequence([cfg["seed"], p["index"], 1, 0]))
    rng_sky = np.random.default_rng(np.random.SeedSequence([cfg["seed"], p["index"], 1, 1]))
    m5 = p["depth_r"] + np.array(cfg["depth_offset"])
    sigma = np.array([sky_sigma_nmgy(m5[b], fwhm[b]) for b in range(3)])
    model = host + arc
    gain = cfg["gain"]
    obs = rng_shot.poisson(np.clip(model, 0.0, None) * gain) / gain if gain > 0 else model.copy()
    sky = rng_sky.normal(0.0, 1.0, (3, S, S))
    a = cfg["noise_corr"]
    if a > 0:  # resampled coadds: nearest-neighbour correlated sky, per-pixel sigma kept
        sky = (sky + a * (np.roll(sky, 1, 1) + np.roll(sky, -1, 1) + np.roll(sky, 1, 2) + np.roll(sky, -1, 2))) / math.sqrt(1 + 4 * a * a)
    images = (obs + sigma[:, None, None] * sky).astype(np.float32)

    rec = {
        "psf_fwhm_used_g": float(fwhm[0]), "psf_fwhm_used_r": float(fwhm[1]), "psf_fwhm_used_z": float(fwhm[2]),
        "psfsize_r": float(fwhm[1]), "psfdepth_r": float(m5[1]), "psfdepth_g": float(m5[0]), "psfdepth_z": float(m5[2]),
        "sky_sigma_g_nmgy": float(sigma[0]), "sky_sigma_r_nmgy": float(sigma[1]), "sky_sigma_z_nmgy": float(sigma[2]),
        "ebv": p["ebv"], "host_r_mag": p["host_r"], "host_dx_arcsec": p["host_x"], "host_dy_arcsec": p["host_y"],
        "n_neighbours": len(p["neighbours"]),
    }
    zeros = {"theta_e_arcsec": 0.0, "src_dmag": 0.0, "src_reff_arcsec": 0.0, "src_e": 0.0, "shear": 0.0, "src_x_arcsec": 0.0,
             "src_y_arcsec": 0.0, "lens_e": 0.0, "lens_phi_rad": 0.0, "arc_snr": 0.0, "magnification": 0.0,
             "total_injected_flux_r": 0.0, "src_r_mag": 0.0, "n_clumps": 0}
    if lensed:
        arc_r = arc[1]
        var = sigma[1] ** 2 + (np.clip(arc_r, 0.0, None) / gain if gain > 0 else 0.0)
        rec.update({
            "theta_e_arcsec": p["theta_e"], "src_dmag": p["src_r"] - p["host_r"], "src_reff_arcsec": p["src_reff"],
            "src_e": (1 - p["src_q"]) / (1 + p["src_q"]), "shear": math.hypot(p["g1"], p["g2"]),
            "src_x_arcsec": p["src_dx"], "src_y_arcsec": p["src_dy"], "lens_e": (1 - p["lens_q"]) / (1 + p["lens_q"]),
            "lens_phi_rad": p["lens_phi"], "arc_snr": float(np.max(np.clip(arc_r, 0.0, None) / np.sqrt(var))),
            "magnification": float(arc_unconv_r.sum() / mag_to_nmgy(p["src_r"])),
            "total_injected_flux_r": float(arc_r.sum()), "src_r_mag": p["src_r"], "n_clumps": len(p["clumps"]),
        })
    else:
        rec.update(zeros)
    return images, rec, {"host": host, "arc": arc, "sigma": sigma}


def _render_job(args):
    i, is_control, cfg = args
    img, rec, _ = render_stamp(draw_stamp(i, is_control, cfg), cfg)
    return i, img, rec


def brickname(ra: float, dec: float) -> str:
    """DR10-style brick name (RRRR[pm]DDD, 0.1 deg units) of the 0.25 deg brick holding (ra, dec)."""
    dec_c = (math.floor(dec / 0.25) + 0.5) * 0.25
    ra_c = (math.floor(ra / 0.25) + 0.5) * 0.25
    return f"{int(round(ra_c * 10)) % 3600:04d}{'p' if dec_c >= 0 else 'm'}{int(round(abs(dec_c) * 10)):03d}"


def layout(cfg: dict) -> pd.DataFrame:
    """Labels, regions, splits and sky positions: one row per stamp (from the master stream)."""
    n, R = cfg["n"], cfg["n_regions"]
    rng = np.random.default_rng(np.random.SeedSequence([cfg["seed"], 2**31 - 1]))
    n_ctrl = int(round(cfg["control_frac"] * n))
    is_control = np.zeros(n, dtype=bool)
    is_control[rng.permutation(n)[:n_ctrl]] = True
    fr = np.array([cfg["split_fractions"][s] for s in SPLITS], dtype=float)
    if R < int((fr > 0).sum()):
        raise ValueError(f"--n-regions {R} is fewer than the splits with a non-zero fraction ({int((fr > 0).sum())})")
    # regions per split: at least one for every split with a non-zero fraction, the rest by largest remainder
    counts = np.where(fr > 0, 1, 0)
    share = fr / fr.sum() * R
    while counts.sum() < R:
        counts[int(np.argmax(share - counts))] += 1
    region_split = np.repeat(np.array(SPLITS), counts)[rng.permutation(R)]
    region_ids = 100_000 + np.arange(R)
    # regions spread in RA across DR10 South, ~1 deg across, far apart (region- and host-disjoint)
    ra_c = (np.arange(R) + 0.5) * 360.0 / R + rng.uniform(-1, 1, R)
    dec_c = rng.uniform(-60.0, 30.0, R)
    reg = rng.integers(0, R, n)
    dec = dec_c[reg] + rng.uniform(-0.5, 0.5, n)
    ra = (ra_c[reg] + rng.uniform(-0.5, 0.5, n) / np.cos(np.deg2rad(dec))) % 360.0
    return pd.DataFrame({"index": np.arange(n), "is_control": is_control, "region_id": region_ids[reg],
                         "region_split": region_split[reg], "ra": ra, "dec": dec})


CONTRACT_STRINGS = ("task_id", "experiment_id", "selection_set_id", "ranking_mode", "selection_strategy", "brickname",
                    "pipeline_version", "config_id", "bandset", "lens_model")


def config_id(cfg: dict) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:12]


def write_dataset(out_dir: Path, cfg: dict, workers: int, progress: bool = True) -> dict:
    """Render every stamp and write the Hive-partitioned contract set; returns a summary."""
    import lenstronomy

    lay = layout(cfg)
    jobs = [(int(i), bool(c), cfg) for i, c in zip(lay["index"], lay["is_control"])]
    images: list = [None] * len(jobs)
    recs: list = [None] * len(jobs)
    t0 = time.perf_counter()
    if workers > 1:
        with get_context("fork" if sys.platform.startswith("linux") else "spawn").Pool(workers) as pool:
            for k, (i, img, rec) in enumerate(pool.imap_unordered(_render_job, jobs, chunksize=8)):
                images[i], recs[i] = img, rec
                if progress and (k + 1) % 250 == 0:
                    print(f"  rendered {k + 1}/{len(jobs)} ({(k + 1) / (time.perf_counter() - t0):.1f} stamps/s)", flush=True)
    else:
        for k, job in enumerate(jobs):
            i, img, rec = _render_job(job)
            images[i], recs[i] = img, rec
            if progress and (k + 1) % 250 == 0:
                print(f"  rendered {k + 1}/{len(jobs)} ({(k + 1) / (time.perf_counter() - t0):.1f} stamps/s)", flush=True)
    render_s = time.perf_counter() - t0

    df = pd.concat([lay, pd.DataFrame(recs)], axis=1)
    cid = config_id(cfg)
    df["task_id"] = [f"xfer-{cfg['seed']}-{i:06d}" for i in df["index"]]
    df["experiment_id"] = "transfer_check_lenstronomy"
    df["selection_set_id"] = "synthetic_lrg_hosts"
    df["ranking_mode"] = "random"
    df["selection_strategy"] = "random"
    df["brickname"] = [brickname(r, d) for r, d in zip(df["ra"], df["dec"])]
    df["pipeline_version"] = f"transfer_check/lenstronomy-{lenstronomy.__version__}"
    df["config_id"] = cid
    df["stamp_size"] = cfg["stamp_size"]
    df["bandset"] = "grz"
    df["ab_zp_nmgy"] = ZP
    df["lens_model"] = np.where(df["is_control"], "CONTROL", "SIE")
    df["is_control"] = df["is_control"].astype(np.int32)
    df["cutout_ok"] = 1
    df["bad_pixel_frac"] = 0.0         # no masks simulated: honestly clean
    df["wise_brightmask_frac"] = 0.0

    def npz(img: np.ndarray) -> bytes:
        buf = io.BytesIO()
        np.savez_compressed(buf, image_g=img[0], image_r=img[1], image_z=img[2])  # the contract's encoding, as Phase 4c wrote it
        return buf.getvalue()

    out_dir.mkdir(parents=True, exist_ok=True)
    n_files = 0
    for split in SPLITS:
        part = df[df["region_split"] == split]
        if part.empty:
            continue
        d = out_dir / f"region_split={split}"
        d.mkdir(parents=True, exist_ok=True)
        for s in range(0, len(part), cfg["rows_per_shard"]):
            chunk = part.iloc[s : s + cfg["rows_per_shard"]]
            cols = {}
            for c in chunk.columns:
                if c == "index" or (c == "region_split" and not cfg["split_column"]):
                    continue
                v = chunk[c].to_numpy()
                if c in CONTRACT_STRINGS or c == "region_split":
                    cols[c] = pa.array(v.astype(str), pa.string())
                elif c in ("region_id",):
                    cols[c] = pa.array(v.astype(np.int64), pa.int64())
                elif c in ("stamp_size", "is_control", "cutout_ok", "n_neighbours", "n_clumps"):
                    cols[c] = pa.array(v.astype(np.int32), pa.int32())
                else:
                    cols[c] = pa.array(v.astype(np.float64), pa.float64())
            cols["stamp_npz"] = pa.array([npz(images[i]) for i in chunk["index"]], pa.binary())
            pq.write_table(pa.table(cols), d / f"part-{s // cfg['rows_per_shard']:05d}.parquet")
            n_files += 1
    by = df.groupby(["region_split", "is_control"]).size()
    return {"render_s": render_s, "rows": len(df), "files": n_files, "config_id": cid,
            "rows_by_split_label": {f"{s}/{'control' if c else 'injection'}": int(v) for (s, c), v in by.items()},
            "regions_by_split": {s: int(df.loc[df["region_split"] == s, "region_id"].nunique()) for s in SPLITS}}


# ======================================================================= the project's path

def stage_real_data(source: Path, work: Path, max_reject_frac: float, cache_dtype: str, workers: int) -> dict:
    """The local-directory branch of stages/stamps.py, step by step, into ``work``."""
    staging, stamps, cache = work / "staging", work / "stamps", work / "cache"
    try:
        res = stage(str(source), staging, workers=max(1, workers), progress=False)
    except StagingError as exc:
        raise TransferError(f"dhs.staging.stage refused the set: {exc}") from exc
    report = validate(staging, workers=workers, progress=False)
    try:
        report.raise_if_errors()
    except DatasetInvalid as exc:
        raise TransferError(f"dhs.contract.validate.validate found dataset errors: {exc}") from exc
    with atomic.atomic_dir(stamps) as tmp:
        link_tree(staging, tmp, [str(p.relative_to(staging)) for p in list_shards(staging)])
    rejected = int(sum(report.rejected.values()))
    if report.rows_read and rejected / report.rows_read > max_reject_frac:
        raise TransferError(f"stages/stamps.py rejection-rate check: {rejected} of {report.rows_read} rows rejected "
                            f"(> stamps.max_reject_frac={max_reject_frac:.2%}):\n{report.summary()}")
    try:
        summary = build_cache(report, cache, dtype=cache_dtype, workers=workers, progress=False)
    except CacheError as exc:
        raise TransferError(f"dhs.cache.build_cache refused the set: {exc}") from exc
    return {"cache_dir": str(cache), "files_staged": len(res.files), "metrics": report.to_metrics(),
            "cache_rows_by_split": summary.counts, "stamps_clipped_f16": summary.stamps_clipped, "examples": [str(e) for e in report.examples[:20]]}


def score_cache(cache_dir: Path, model_dir: Path, device: str) -> tuple[pd.DataFrame, dict]:
    tm = load_trained(model_dir, device)
    tables = []
    present = (cache_manifest(cache_dir) or {}).get("counts", {})
    for split in [s for s in SPLITS if s in present]:  # an evaluation-only set caches only its splits
        cs = open_split(cache_dir, split)
        if len(cs):
            tables.append(score_table(split, cs.meta, score_split(tm, cs, progress=False)))
    df = pd.concat(tables, ignore_index=True)
    if df["task_id"].duplicated().any():
        raise TransferError("a task_id was scored twice")
    return df, {"checkpoint": str(tm.checkpoint), "step": tm.step, "arch": tm.spec.arch, "normalisation": tm.norm.mode,
                "device": tm.device.type}


def checkpoint_against_scores(root: Path, arch: str, model_dir: Path, eval_split: str, device: str, n: int = 64) -> dict:
    """Does the checkpoint give the scores the thresholds were set on? It rescores the first ``n``
    stamps of the project's own cached ``eval_split`` and compares them with the score table's
    logits, by content: file times say nothing after a `dvc checkout` or an unchanged retrain."""
    scores_path = root / "data" / "scores" / f"{arch}.parquet"
    try:
        split = open_split(root / "data" / "cache", eval_split)
    except CacheError:
        return {"checked": 0, "note": f"no cached {eval_split} split under {root / 'data' / 'cache'}: the checkpoint was not compared"}
    if not scores_path.exists():
        return {"checked": 0, "note": f"{scores_path} not found: the checkpoint was not compared"}
    k = min(n, len(split))
    part = dataclasses.replace(split, images=split.images[:k], meta=split.meta.iloc[:k].reset_index(drop=True))
    fresh = score_split(load_trained(model_dir, device), part, progress=False)
    table = pd.read_parquet(scores_path, columns=["task_id", "logit"]).set_index("task_id")["logit"]
    ids = part.meta["task_id"]
    if not ids.isin(table.index).all():
        return {"checked": 0, "mismatch": f"{scores_path} does not hold the cached {eval_split} stamps: the score table and "
                                          f"the cache come from different runs (let `dvc repro` finish)"}
    diff = float(np.max(np.abs(fresh - table.loc[ids].to_numpy(np.float64))))
    # another device or kernel moves a logit by ~1e-5 of its size; another checkpoint by far more
    tol = 1e-3 * max(1.0, float(np.max(np.abs(fresh))))
    out = {"checked": k, "max_abs_logit_diff": diff}
    if diff > tol:
        out["mismatch"] = (f"{model_dir / 'checkpoint_best.pt'} scores {k} cached {eval_split} stamps up to {diff:.3g} in logit away "
                           f"from {scores_path}: the thresholds belong to another checkpoint (let `dvc repro` finish)")
    return out


# ========================================================================= the comparison

def bin_label(lo: float, hi: float) -> str:
    return f"[{lo:g}, {'inf' if math.isinf(hi) else f'{hi:g}'})"


def completeness_by_bin(snr: np.ndarray, passed: np.ndarray, edges: list[float]) -> list[dict]:
    """k/n of injections per [lo, hi) bin (last bin closed when finite), Wilson 95%."""
    out = []
    for j, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        last = j == len(edges) - 2
        m = (snr >= lo) & ((snr <= hi) if (last and math.isfinite(hi)) else (snr < hi))
        n, k = int(m.sum()), int(passed[m].sum())
        lo_w, hi_w = wilson_interval(k, n)
        out.append({"bin": bin_label(lo, hi), "lo": lo, "hi": hi, "n": n, "k": k, "completeness": k / n if n else None,
                    "wilson_lo": float(lo_w) if n else None, "wilson_hi": float(hi_w) if n else None, "low_n": n < 50})
    return out


def project_reference(root: Path, arch: str, thresholds: list[dict], edges: list[float], eval_split: str) -> dict:
    """The project's own completeness per arc-SNR bin at its thresholds: recomputed from its score
    table in ``edges`` when it exists, and/or read from its arc_snr.csv when the bins agree."""
    out: dict = {"source": None, "by_threshold": {}}
    scores_path = root / "data" / "scores" / f"{arch}.parquet"
    csv_path = root / "plots" / "completeness" / arch / "arc_snr.csv"
    if scores_path.exists():
        sc = pd.read_parquet(scores_path, columns=["split", "label", "score", "arc_snr"])
        inj = sc[(sc["split"] == eval_split) & (sc["label"] == 1)]
        ctrl = sc.loc[(sc["split"] == eval_split) & (sc["label"] == 0), "score"].to_numpy(np.float64)
        # the score table and the thresholds must come from the same run (a `dvc repro` in progress mixes them)
        stale = [f"{t['name']}: {int((ctrl > t['score']).sum())}/{ctrl.size} controls above in the score table, "
                 f"{t['n_controls_above']}/{t['n_controls']} in the metrics" for t in thresholds
                 if int((ctrl > t["score"]).sum()) != int(t["n_controls_above"]) or ctrl.size != int(t["n_controls"])]
        if stale:
            out["stale"] = stale
            print(f"WARNING: {scores_path} does not match {arch}'s completeness metrics ({'; '.join(stale)}); "
                  f"the project's per-bin figures may come from another run", file=sys.stderr)
        snr = pd.to_numeric(inj["arc_snr"], errors="coerce").to_numpy(np.float64)
        for t in thresholds:
            out["by_threshold"][t["name"]] = completeness_by_bin(snr, inj["score"].to_numpy() > t["score"], edges)
        out["source"] = f"{scores_path} ({eval_split} injections, recomputed in these bins)"
        out["arc_snr_quantiles"] = {str(q): float(np.nanquantile(snr, q)) for q in (0.05, 0.25, 0.5, 0.75, 0.95)} if snr.size else {}
    if csv_path.exists():
        csv = pd.read_csv(csv_path, comment="#")
        csv = csv[csv["subset"] == "all"]
        same = False
        for name, g in csv.groupby("threshold"):
            g = g.sort_values("bin")
            csv_edges = list(g["bin_lo"]) + [float(g["bin_hi"].iloc[-1])]
            same = np.allclose(np.array(csv_edges, float), np.array(edges, float), equal_nan=False) if len(csv_edges) == len(edges) else False
            rows = [{"bin": bin_label(r.bin_lo, r.bin_hi), "n": int(r.n), "k": int(r.k), "completeness": float(r.completeness) if r.n else None,
                     "wilson_lo": r.wilson_lo, "wilson_hi": r.wilson_hi, "low_n": bool(r.low_n)} for r in g.itertuples()]
            out.setdefault("csv", {})[name] = rows
            if same and name not in out["by_threshold"]:
                out["by_threshold"][name] = rows
        if out["source"] is None and same:
            out["source"] = str(csv_path)
        if not same:
            out["csv_note"] = f"{csv_path} uses other arc-SNR bins; its rows are in the JSON under project.csv"
    return out


def project_bins(root: Path) -> list[float] | None:
    try:
        b = yaml.safe_load(open(root / "params.yaml"))["completeness"]["bins"]["arc_snr"]
        return [float(x) for x in b]
    except (OSError, KeyError, TypeError):
        return None


def _fmt_c(d: dict | None) -> str:
    if not d or not d.get("n"):
        return "-"
    c = d["completeness"]
    return f"{c:.3f} [{d['wilson_lo']:.3f}, {d['wilson_hi']:.3f}] {d['k']}/{d['n']}{'*' if d.get('low_n') else ''}"


def print_report(res: dict) -> None:
    s = res["set"]
    print()
    print(f"Transfer check: {res['model']['arch']} (step {res['model']['step']}, {res['model']['normalisation']}) "
          f"on {s['n_scored']} independent lenstronomy stamps ({s['n_controls']} controls, {s['n_injections']} injections; "
          f"host at pixel {res['config']['host_centre_px']} + {res['config']['centroid_err_arcsec']}\" rms/axis centroid error)")
    a = res["auroc"]
    print(f"AUROC {a['transfer']:.4f} [{a['transfer_boot_lo']:.4f}, {a['transfer_boot_hi']:.4f}]   project ({res['project']['eval_split']}): "
          f"{a['project'] if a['project'] is not None else float('nan'):.4f}")
    print()
    print("Control FPR at the shipped thresholds (pass = score > threshold; * = within "
          f"{FPR_SLACK}x of nominal)")
    hdr = f"{'threshold':<10} {'score':>8} {'nominal':>8} {'project k/n':>14} {'transfer k/n':>13} {'FPR':>8} {'Wilson 95%':>19} {'ratio':>7}"
    print(hdr)
    print("-" * len(hdr))
    for t in res["fpr"]:
        print(f"{t['name']:<10} {t['threshold_score']:>8.4f} {t['nominal_fpr']:>8g} {t['project_k']:>6}/{t['project_n']:<7} "
              f"{t['k']:>5}/{t['n']:<7} {t['fpr']:>8.4f} [{t['wilson_lo']:.4f}, {t['wilson_hi']:.4f}] {t['ratio_to_nominal']:>6.2f}"
              f"{'*' if t['within_slack'] else ' '}")
    print()
    print("Completeness of injections: overall and per arc-SNR bin (peak-pixel SNR of the noise-free r-band arc); "
          "C [Wilson 95%] k/n, * = n < 50")
    print(f"  project: {res['project']['reference_source']}")
    for t in res["fpr"]:
        name = t["name"]
        comp = res["completeness"][name]
        print(f"  {name}: overall transfer {_fmt_c(comp['overall'])}   project {res['project']['overall'].get(name, '-')}")
        w = 44
        print(f"    {'arc_snr':<13} {'transfer':<{w}} {'project':<{w}}")
        proj = {r["bin"]: r for r in res["project"]["by_threshold"].get(name, [])}
        for r in comp["by_arc_snr"]:
            print(f"    {r['bin']:<13} {_fmt_c(r):<{w}} {_fmt_c(proj.get(r['bin'])):<{w}}")
    t = res["timing_s"]
    print()
    print(f"time: render {t['render']:.1f} s ({res['set']['n_rendered'] / t['render']:.1f} stamps/s on {res['config']['workers']} worker(s)), "
          f"stage+validate+cache {t['stage']:.1f} s, score {t['score']:.1f} s, total {t['total']:.1f} s")


# ============================================================================== entry point

def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_argument_group("project")
    g.add_argument("--project-root", default=".", help="repository holding data/models, metrics/ and plots/ (read only)")
    g.add_argument("--arch", default="small_cnn")
    g.add_argument("--device", default="cpu", help="auto | cpu | cuda (scoring)")
    g.add_argument("--out", default=None, help="write every figure as JSON here")
    g.add_argument("--workdir", default=None, help="render, stage and cache here (default: a temporary directory, removed)")
    g.add_argument("--keep", action="store_true", help="keep the temporary directory")
    g.add_argument("--workers", type=int, default=1, help="rendering processes (and validate/cache workers)")
    g.add_argument("--snr-bins", default=None, help="comma-separated arc-SNR edges ('inf' allowed), or 'project' for "
                   "completeness.bins.arc_snr; default 0,2,5,8,20,50,inf")
    g.add_argument("--quiet", action="store_true")
    s = ap.add_argument_group("the independent set")
    s.add_argument("--n", type=int, default=2000)
    s.add_argument("--seed", type=int, default=16)
    s.add_argument("--control-frac", type=float, default=0.5)
    s.add_argument("--n-regions", type=int, default=20)
    s.add_argument("--split-fractions", default="train=0.1,val=0.1,test=0.8",
                   help="regions per split; a one-split set (test=1) is an evaluation-only set: cached and scored as it is")
    s.add_argument("--split-column", action="store_true", help="also write region_split into the files (Spark's partitionBy does not)")
    s.add_argument("--rows-per-shard", type=int, default=500)
    s.add_argument("--stamp-size", type=int, default=64, choices=[64, 96])
    s.add_argument("--host-centre-px", type=float, default=None, help="true host pixel before the centroid error (default: size/2, "
                   "i.e. 32, where a cutout centred on the catalogue position puts it; 31.5 is the geometric centre)")
    s.add_argument("--centroid-err-arcsec", type=float, default=0.1, help="catalogue-centroid error, Gaussian sigma per axis")
    s.add_argument("--subpixel-jitter-px", type=float, default=0.0, help="extra uniform offset of +-half this, px")
    s.add_argument("--host-r", type=float, nargs=2, default=[18.0, 21.0])
    s.add_argument("--host-gr", type=float, nargs=2, default=[1.6, 1.9])
    s.add_argument("--host-rz", type=float, nargs=2, default=[0.9, 1.3])
    s.add_argument("--host-n", type=float, nargs=2, default=[3.0, 5.0])
    s.add_argument("--host-reff", type=float, nargs=2, default=[0.6, 2.5], help="arcsec (lenstronomy's circularised R_sersic)")
    s.add_argument("--host-q", type=float, nargs=2, default=[0.5, 1.0])
    s.add_argument("--neighbours-mean", type=float, default=0.0, help="Poisson mean of faint neighbours per stamp")
    s.add_argument("--neighbour-r", type=float, nargs=2, default=[21.0, 24.5])
    s.add_argument("--neighbour-min-sep-arcsec", type=float, default=2.5)
    s.add_argument("--theta-e", type=float, nargs=2, default=[0.5, 2.5], help="arcsec, circularised (lenstronomy SIE)")
    s.add_argument("--lens-q", type=float, nargs=2, default=[0.5, 1.0])
    s.add_argument("--shear-sd", type=float, default=0.05, help="sd of each shear component")
    s.add_argument("--beta-max-frac", type=float, default=0.5, help="source offset uniform in a disc of this x theta_E")
    s.add_argument("--src-r", type=float, nargs=2, default=[22.0, 26.0], help="unlensed source r mag")
    s.add_argument("--src-gr", type=float, nargs=2, default=[0.2, 0.6])
    s.add_argument("--src-rz", type=float, nargs=2, default=[0.1, 0.5])
    s.add_argument("--src-n", type=float, nargs=2, default=[0.5, 2.0])
    s.add_argument("--src-reff", type=float, nargs=2, default=[0.1, 0.5])
    s.add_argument("--src-q", type=float, nargs=2, default=[0.5, 1.0])
    s.add_argument("--clumps-mean", type=float, default=2.0, help="Poisson mean of Gaussian clumps in the source")
    s.add_argument("--clumps-max", type=int, default=4)
    s.add_argument("--clump-flux-frac", type=float, nargs=2, default=[0.1, 0.4], help="source flux in all clumps together")
    s.add_argument("--clump-sigma", type=float, nargs=2, default=[0.03, 0.08], help="arcsec")
    s.add_argument("--psf", choices=["moffat", "gaussian"], default="moffat")
    s.add_argument("--moffat-beta", type=float, default=3.5)
    s.add_argument("--psf-fwhm-r", type=float, nargs=2, default=[0.9, 1.6], help="arcsec")
    s.add_argument("--psf-ratio", type=float, nargs=3, default=[1.16, 1.0, 0.96], help="g r z FWHM / r FWHM")
    s.add_argument("--psfdepth-r", type=float, nargs=2, default=[23.6, 25.5])
    s.add_argument("--depth-offset", type=float, nargs=3, default=[0.8, 0.0, -0.9], help="g r z 5-sigma depth - psfdepth_r")
    s.add_argument("--gain", type=float, default=10000.0, help="effective e-/nMgy for host and arc Poisson noise (0 = none)")
    s.add_argument("--noise-corr", type=float, default=0.0, help="nearest-neighbour sky-noise correlation weight (0 = white)")
    s.add_argument("--supersampling", type=int, default=4, help="lenstronomy supersampling_factor")
    s.add_argument("--pad-px", type=int, default=16, help="host rendered this far beyond each edge before the PSF")
    s.add_argument("--render-mode", choices=["shared", "per_band"], default="shared")
    args = ap.parse_args(argv)
    if args.n < 4:
        ap.error("--n must be >= 4")
    return args


def _parse_fracs(text: str) -> dict:
    out = {s: 0.0 for s in SPLITS}
    for part in text.split(","):
        k, v = part.split("=")
        if k.strip() not in out:
            raise ValueError(f"--split-fractions: unknown split {k!r}")
        out[k.strip()] = float(v)
    if sum(out.values()) <= 0:
        raise ValueError("--split-fractions must give some split a positive fraction")
    return out


def render_config(args: argparse.Namespace) -> dict:
    return {
        "n": args.n, "seed": args.seed, "control_frac": args.control_frac, "n_regions": args.n_regions,
        "split_fractions": _parse_fracs(args.split_fractions), "split_column": args.split_column, "rows_per_shard": args.rows_per_shard,
        "stamp_size": args.stamp_size, "origin_px": args.stamp_size / 2.0,
        "host_centre_px": args.stamp_size / 2.0 if args.host_centre_px is None else args.host_centre_px,
        "centroid_err_arcsec": args.centroid_err_arcsec, "subpixel_jitter_px": args.subpixel_jitter_px,
        "host_r": args.host_r, "host_gr": args.host_gr, "host_rz": args.host_rz, "host_n": args.host_n, "host_reff": args.host_reff,
        "host_q": args.host_q, "neighbours_mean": args.neighbours_mean, "neighbour_r": args.neighbour_r,
        "neighbour_min_sep_arcsec": args.neighbour_min_sep_arcsec, "theta_e": args.theta_e, "lens_q": args.lens_q,
        "shear_sd": args.shear_sd, "beta_max_frac": args.beta_max_frac, "src_r": args.src_r, "src_gr": args.src_gr,
        "src_rz": args.src_rz, "src_n": args.src_n, "src_reff": args.src_reff, "src_q": args.src_q, "clumps_mean": args.clumps_mean,
        "clumps_max": args.clumps_max, "clump_flux_frac": args.clump_flux_frac, "clump_sigma": args.clump_sigma, "psf": args.psf,
        "moffat_beta": args.moffat_beta, "psf_fwhm_r": args.psf_fwhm_r, "psf_ratio": args.psf_ratio, "psfdepth_r": args.psfdepth_r,
        "depth_offset": args.depth_offset, "gain": args.gain, "noise_corr": args.noise_corr, "supersampling": args.supersampling,
        "pad_px": args.pad_px, "render_mode": args.render_mode,
    }


def run(args: argparse.Namespace) -> dict:
    t_all = time.perf_counter()
    root = Path(args.project_root).resolve()
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    model_dir = root / "data" / "models" / args.arch
    metrics_path = root / "metrics" / "completeness" / f"{args.arch}.json"
    for need in (model_dir / "checkpoint_best.pt", metrics_path):
        if not need.exists():
            raise TransferError(f"{need} not found: point --project-root at a repository where `dvc repro` has run")
    comp_metrics = json.loads(metrics_path.read_text())
    thresholds = sorted(comp_metrics["thresholds"], key=lambda t: -t["target_fpr"] if t.get("target_fpr") else 0)
    thresholds = [t for t in thresholds if t.get("target_fpr")]
    ckpt_check = checkpoint_against_scores(root, args.arch, model_dir, comp_metrics.get("eval_split", "test"), args.device)
    if ckpt_check.get("mismatch"):  # on stderr, --quiet or not: every figure below depends on it
        print(f"WARNING: {ckpt_check['mismatch']}", file=sys.stderr)
    params = yaml.safe_load(open(root / "params.yaml")) if (root / "params.yaml").exists() else {}
    st = (params or {}).get("stamps", {}) or {}
    if args.snr_bins is None:
        edges = list(DEFAULT_SNR_BINS)
    elif args.snr_bins == "project":
        edges = project_bins(root) or list(DEFAULT_SNR_BINS)
    else:
        edges = [float(x) for x in args.snr_bins.split(",")]
    cfg = render_config(args)

    own_tmp = args.workdir is None
    work = Path(tempfile.mkdtemp(prefix="dhs-transfer-")) if own_tmp else Path(args.workdir)
    for forbidden in ("data", "metrics", "plots"):
        if work.resolve().is_relative_to(root / forbidden):
            raise TransferError(f"--workdir {work} is inside the project's {forbidden}/: refusing to write there")
    if not own_tmp and work.exists() and any(work.iterdir()):
        raise TransferError(f"--workdir {work} is not empty")
    work.mkdir(parents=True, exist_ok=True)
    try:
        say(f"rendering {args.n} stamps with lenstronomy ({args.render_mode}, {args.workers} worker(s)) into {work / 'rendered'} ...")
        written = write_dataset(work / "rendered", cfg, args.workers, progress=not args.quiet)
        say("staging through the real-data path (stage -> validate -> link -> build_cache) ...")
        t = time.perf_counter()
        staged = stage_real_data(work / "rendered", work, float(st.get("max_reject_frac", 0.05)), str(st.get("cache_dtype", "float16")),
                                 max(1, args.workers))
        stage_s = time.perf_counter() - t
        m = staged["metrics"]
        say(f"  {m['rows_read']} rows read, {m['rows_used']} used, rejected {m['rejected_by_reason']}; cache {staged['cache_rows_by_split']}")
        t = time.perf_counter()
        scores, model_info = score_cache(Path(staged["cache_dir"]), model_dir, args.device)
        score_s = time.perf_counter() - t
    finally:
        if own_tmp and not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    y = scores["label"].to_numpy()
    sc = scores["score"].to_numpy(np.float64)
    ctrl, inj = sc[y == 0], sc[y == 1]
    from sklearn.metrics import roc_auc_score

    auc = float(roc_auc_score(y, sc)) if 0 < y.sum() < len(y) else float("nan")
    rng = np.random.default_rng(0)
    boots = []
    for _ in range(200):
        ib = rng.integers(0, ctrl.size, ctrl.size)
        jb = rng.integers(0, inj.size, inj.size)
        yy = np.r_[np.zeros(ctrl.size), np.ones(inj.size)]
        boots.append(roc_auc_score(yy, np.r_[ctrl[ib], inj[jb]]))
    snr = pd.to_numeric(scores.loc[y == 1, "arc_snr"], errors="coerce").to_numpy(np.float64)

    eval_split = comp_metrics.get("eval_split", "test")
    proj = project_reference(root, args.arch, thresholds, edges, eval_split)
    fpr_rows, comp = [], {}
    for t in thresholds:
        k, n = int((ctrl > t["score"]).sum()), int(ctrl.size)
        lo, hi = wilson_interval(k, n)
        fpr = k / n
        fpr_rows.append({"name": t["name"], "threshold_score": float(t["score"]), "nominal_fpr": float(t["target_fpr"]),
                         "project_k": int(t["n_controls_above"]), "project_n": int(t["n_controls"]), "project_fpr": float(t["achieved_fpr"]),
                         "project_low_count": bool(t.get("low_count", False)),
                         "k": k, "n": n, "fpr": fpr, "wilson_lo": float(lo), "wilson_hi": float(hi),
                         "ratio_to_nominal": fpr / float(t["target_fpr"]), "ratio_lo": float(lo) / float(t["target_fpr"]),
                         "ratio_hi": float(hi) / float(t["target_fpr"]), "within_slack": fpr <= FPR_SLACK * float(t["target_fpr"])})
        passed = inj > t["score"]
        kk, nn = int(passed.sum()), int(inj.size)
        lo2, hi2 = wilson_interval(kk, nn)
        comp[t["name"]] = {"overall": {"k": kk, "n": nn, "completeness": kk / nn if nn else None, "wilson_lo": float(lo2),
                                       "wilson_hi": float(hi2), "low_n": nn < 50},
                           "by_arc_snr": completeness_by_bin(snr, passed, edges)}
    headline = comp_metrics.get("headline", {})
    proj_overall = {}
    for t in thresholds:
        h = headline.get(t["name"], {}).get("overall", {}).get("all")
        if h:
            proj_overall[t["name"]] = _fmt_c({**h, "low_n": h["n"] < 50})
    res = {
        "config": {**cfg, "workers": args.workers, "snr_bins": [None if math.isinf(e) else e for e in edges]},
        "model": model_info,
        "set": {"n_rendered": written["rows"], "n_scored": int(len(scores)), "n_controls": int(ctrl.size), "n_injections": int(inj.size),
                "rows_by_split_label": written["rows_by_split_label"], "regions_by_split": written["regions_by_split"],
                "arc_snr_quantiles": {str(q): float(np.nanquantile(snr, q)) for q in (0.05, 0.25, 0.5, 0.75, 0.95)} if snr.size else {},
                "config_id": written["config_id"]},
        "real_data_path": {k: v for k, v in staged.items() if k != "cache_dir"},
        "auroc": {"transfer": auc, "transfer_boot_lo": float(np.percentile(boots, 2.5)), "transfer_boot_hi": float(np.percentile(boots, 97.5)),
                  "project": comp_metrics.get("auroc")},
        "fpr": fpr_rows,
        "completeness": comp,
        "project": {"root": str(root), "metrics": str(metrics_path), "eval_split": eval_split, "reference_source": proj["source"],
                    "by_threshold": proj["by_threshold"], "overall": proj_overall, "csv": proj.get("csv"), "csv_note": proj.get("csv_note"),
                    "arc_snr_quantiles": proj.get("arc_snr_quantiles"), "score_table_mismatch": proj.get("stale"),
                    "checkpoint_check": ckpt_check},
        "timing_s": {"render": written["render_s"], "stage": stage_s, "score": score_s, "total": time.perf_counter() - t_all},
    }
    return res


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        res = run(args)
    except (TransferError, TrainingError, CacheError) as exc:
        print(f"transfer_check: FAILED: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        print_report(res)
    if args.out:
        out = Path(args.out).resolve()
        root = Path(args.project_root).resolve()
        if any(out.is_relative_to(root / d) for d in ("data", "metrics", "plots")):
            print(f"transfer_check: refusing to write {out} inside the project's data/, metrics/ or plots/", file=sys.stderr)
            return 2
        atomic.write_json(out, res)
        if not args.quiet:
            print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
