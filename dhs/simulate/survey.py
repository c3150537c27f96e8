"""Render a sampled population into grz stamps (nMgy), batch by batch, on CPU or GPU.

Per stamp (see ``dhs.simulate.scene`` for what the scene holds):

1. the scene's galaxies (host in its morphology, companion, neighbours), each a unit-flux
   profile times its band fluxes, rendered with ``host_oversample`` sub-pixels on a grid
   ``host_pad_px`` wider than the stamp on each side; stars added as point sources in Fourier
   space; every band convolved with its own PSF on that grid and cropped (so light scattered in
   from beyond the edges is present and the circular wrap lands in the cropped margin);
2. for injections, the lensed source: SIE + shear centred on the host's true centre (not the
   stamp centre), a smooth Sersic normalised to its total flux plus star-forming knots with
   their own colour (``dhs.simulate.knots``), ``oversample`` x ``oversample`` sub-pixels, each
   band convolved with its PSF on the stamp grid;
3. noise (``dhs.simulate.noise``): sky noise from the band's depth, photon noise of the scene
   and of the arc, and the resampling correlation of a coadd, drawn on the rendering device
   from the stamp's keyed generator (paired stamps share the scene's noise).

Rendered metrics (controls carry 0):
- ``magnification``: lensed r flux inside the stamp before the PSF / unlensed r flux.
- ``lensed_src_r_mag``: the source's r magnitude as lensed, src_r_mag - 2.5 log10(magnification).
- ``total_injected_flux_r``: r-band arc flux inside the stamp after the PSF (nMgy).
- ``arc_snr``: peak-pixel SNR of the noise-free r-band arc after the PSF,
  max_pix arc_r / sqrt(var_r), var_r the pixel's noise variance: sky plus the photon noise of
  everything in the pixel (host, field and arc). The Phase 4d proxy uses the peak definition.
- ``arc_snr_int``: the arc's matched-filter S/N in the best band, sqrt(sum arc_b^2 / var_b): the
  S/N of the whole arc in a perfectly lens-subtracted image (``dhs.simulate.visibility``).
- ``mu_reff_over_psf``: magnification x source half-light radius / r PSF FWHM (arc-like above ~0.5).
- ``discoverable``: 1 where LensPop's criteria hold at the stamp's own seeing and ``arc_snr_int``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd
import torch

from dhs import devices
from dhs.simulate.config import SimConfig
from dhs.simulate.keyed import STREAM_KNOTS, uniforms_np
from dhs.simulate.knots import GAUSS_HALF_LIGHT_PER_SIGMA, MAX_KNOTS, N_UNIFORMS as N_KNOT_UNIFORMS, sample_knots
from dhs.simulate.morphology import PROFILES as MORPHOLOGY_PROFILES
from dhs.simulate.noise import add_noise, effective_gain_e_per_nmgy, pixel_variance, sky_sigma_nmgy
from dhs.simulate.population import mag_to_nmgy
from dhs.simulate.psf import PSFSpectra
from dhs.simulate.render import lensed_knots, lensed_sersic, oversample_for, render_profile, unlensed_sersic
from dhs.simulate.scene import Components, band_fluxes, sample_scene
from dhs.simulate.visibility import lenspop_criteria, matched_filter_snr, mu_reff_over_psf

PROFILES = {"sersic": unlensed_sersic, **MORPHOLOGY_PROFILES}
METRIC_COLUMNS = ("arc_snr", "arc_snr_int", "mu_reff_over_psf", "discoverable", "total_injected_flux_r", "magnification",
                  "lensed_src_r_mag", "knot_flux_fraction")


def visibility_metrics(rows: pd.DataFrame, arc: torch.Tensor, variance: torch.Tensor, magnification: np.ndarray) -> dict[str, np.ndarray]:
    """Per row, from the noise-free arc (B, 3, N, N) and the pixel noise variance it is drawn
    against (``dhs.simulate.visibility``): ``arc_snr_int`` (matched-filter S/N in the best band),
    ``mu_reff_over_psf`` (magnification x source half-light radius / r PSF FWHM) and
    ``discoverable`` (1 where LensPop's criteria hold at the row's own seeing and S/N; 0 for
    controls, whose arc is empty)."""
    snr = matched_filter_snr(arc, variance).amax(dim=1).cpu().numpy()
    psf = rows["psf_fwhm_used_r"].to_numpy(float)
    reff = rows["src_reff_arcsec"].to_numpy(float)
    mu = np.asarray(magnification, float)
    inj = rows["is_control"].to_numpy() == 0
    disc = lenspop_criteria(rows["theta_e_arcsec"].to_numpy(float), reff, psf, mu, snr)["discoverable"] & inj
    return {"arc_snr_int": np.where(inj, snr, 0.0), "mu_reff_over_psf": np.where(inj, mu_reff_over_psf(mu, reff, psf), 0.0),
            "discoverable": disc.astype(np.int64)}


# simulate.device -> a torch device: the project's one rule (dhs.devices), auto the current GPU
resolve_device = partial(devices.resolve_device, key="simulate.device")


@dataclass
class RenderedBatch:
    rows: pd.DataFrame  # the population rows of this batch, with scene columns and rendered metrics added
    images: np.ndarray  # (B, 3, N, N) float32 nMgy; failed cutouts hold zeros


@dataclass
class NoiseFree:
    """Noise-free light of a batch on the rendering device: (B, 3, N, N) each."""

    scene: torch.Tensor
    arc: torch.Tensor
    magnification: np.ndarray  # (B,), 0 for controls
    knot_flux_fraction: np.ndarray  # (B,)
    scene_columns: dict[str, np.ndarray]


def _t(a, device, dtype) -> torch.Tensor:
    return torch.tensor(np.asarray(a, dtype=np.float64), device=device, dtype=dtype)


def _dtype(cfg: SimConfig) -> torch.dtype:
    return torch.float64 if cfg.dtype == "float64" else torch.float32


def psf_fwhm_grz(rows: pd.DataFrame, cfg: SimConfig) -> np.ndarray:
    return np.stack([rows[f"psf_fwhm_used_{b}"].to_numpy(float) for b in cfg.bands], axis=1)


def _psf_spectra(rows: pd.DataFrame, cfg: SimConfig, n_pix: int, device, dtype) -> PSFSpectra:
    """(B, 3) PSF spectra on an n_pix grid; PSFs are per brick, so each distinct FWHM is built once."""
    fwhm = psf_fwhm_grz(rows, cfg)
    unique_fwhm, inverse = np.unique(fwhm, return_inverse=True)
    which = torch.as_tensor(inverse.reshape(fwhm.shape), device=device)
    return PSFSpectra.from_fwhm(_t(unique_fwhm, device, dtype), n_pix, cfg.pixel_scale_arcsec, model=cfg.psf_model,
                                beta=cfg.moffat_beta)[which]


# Small galaxies (most neighbours) are drawn on a PATCH_PX patch around their centre instead of the
# whole host grid (9x fewer profile evaluations). A patch reaches 16 px from the centre (4.2 arcsec
# at DR10's 0.262 arcsec/px), i.e. >= 8 half-light radii for the galaxies sent to it: an exponential
# keeps > 99.9% of its flux there and a de Vaucouleurs profile ~97%, which is where the Legacy
# Surveys' own Tractor models truncate theirs (8 r_e); the larger ones are drawn on the full grid.
PATCH_PX = 32


def small_reff_arcsec(pixel_scale_arcsec: float) -> float:
    """The largest half-light radius (arcsec) drawn on a patch: 8 of them fit in the patch's
    half-width less 2 pixels (the centre sits within half a pixel of the patch centre)."""
    return (PATCH_PX // 2 - 2) * pixel_scale_arcsec / 8.0


def _render_on_grid(profile, params: dict[str, torch.Tensor], n_pix: int, cfg: SimConfig) -> torch.Tensor:
    return render_profile(profile, params, n_pix=n_pix, pixel_scale_arcsec=cfg.pixel_scale_arcsec,
                          oversample=cfg.host_oversample, threshold=cfg.host_supersample_threshold)


def render_components(parts: list[Components], profile_name: str, n_stamps: int, n_pix: int, cfg: SimConfig, device, dtype) -> torch.Tensor:
    """(B, 3, M, M) pre-PSF light of every component of one profile, summed per stamp and band."""
    out = torch.zeros((n_stamps, 3, n_pix, n_pix), device=device, dtype=dtype)
    stamp = np.concatenate([p.stamp for p in parts])
    if len(stamp) == 0:
        return out
    flux = np.concatenate([p.flux for p in parts])
    params = {k: np.concatenate([p.params[k] for p in parts]) for k in parts[0].params}
    profile = PROFILES[profile_name]
    small = ((params["reff_arcsec"] <= small_reff_arcsec(cfg.pixel_scale_arcsec)) if profile_name == "sersic"
             else np.zeros(len(stamp), bool))
    big = ~small
    if big.any():
        unit = _render_on_grid(profile, {k: _t(v[big], device, dtype) for k, v in params.items()}, n_pix, cfg)
        idx = torch.as_tensor(stamp[big], device=device)
        f = _t(flux[big], device, dtype)
        for c in range(3):
            out[:, c].index_add_(0, idx, unit * f[:, c, None, None])
    if small.any():
        s, P, M = cfg.pixel_scale_arcsec, PATCH_PX, n_pix
        # patch pixel (i, j) is grid pixel (i0 + i, j0 + j); the centre stays within half a pixel
        # of the patch centre, so the patch's own pixel grid serves every component
        col = params["x_arcsec"][small] / s + (M - 1) / 2.0
        row = params["y_arcsec"][small] / s + (M - 1) / 2.0
        j0, i0 = np.round(col - (P - 1) / 2.0).astype(np.int64), np.round(row - (P - 1) / 2.0).astype(np.int64)
        local = dict(params)
        local["x_arcsec"] = (col - j0 - (P - 1) / 2.0) * s
        local["y_arcsec"] = (row - i0 - (P - 1) / 2.0) * s
        unit = _render_on_grid(profile, {k: _t(v[small] if k not in ("x_arcsec", "y_arcsec") else local[k], device, dtype)
                                         for k, v in params.items()}, P, cfg)
        W = M + 2 * P  # padded so that patches never leave the array
        ii = torch.as_tensor(i0 + P, device=device)[:, None, None] + torch.arange(P, device=device)[None, :, None]
        jj = torch.as_tensor(j0 + P, device=device)[:, None, None] + torch.arange(P, device=device)[None, None, :]
        flat = (torch.as_tensor(stamp[small], device=device)[:, None, None] * W + ii) * W + jj
        f = _t(flux[small], device, dtype)
        padded = torch.zeros((3, n_stamps * W * W), device=device, dtype=dtype)
        for c in range(3):
            padded[c].index_add_(0, flat.reshape(-1), (unit * f[:, c, None, None]).reshape(-1))
        out += padded.reshape(3, n_stamps, W, W).permute(1, 0, 2, 3)[..., P: P + M, P: P + M]
    return out


def star_spectra(stars: Components, n_stamps: int, n_pix: int, pixel_scale_arcsec: float, device, dtype) -> torch.Tensor:
    """(B, 3, M, M//2 + 1) rfft2 spectra of point sources at sub-pixel positions (band-limited
    deltas: times a PSF spectrum they give the sampled PSF centred exactly on the star)."""
    cdt = torch.complex128 if dtype == torch.float64 else torch.complex64
    out = torch.zeros((n_stamps, 3, n_pix, n_pix // 2 + 1), device=device, dtype=cdt)
    if len(stars.stamp) == 0:
        return out
    c = (n_pix - 1) / 2.0
    col = _t(stars.params["x_arcsec"] / pixel_scale_arcsec + c, device, torch.float64)
    row = _t(stars.params["y_arcsec"] / pixel_scale_arcsec + c, device, torch.float64)
    fy = torch.fft.fftfreq(n_pix, device=device, dtype=torch.float64)
    fx = torch.fft.rfftfreq(n_pix, device=device, dtype=torch.float64)
    phase_y = torch.exp(-2j * math.pi * row[:, None] * fy[None, :])
    phase_x = torch.exp(-2j * math.pi * col[:, None] * fx[None, :])
    spec = (phase_y[:, :, None] * phase_x[:, None, :]).to(cdt)  # (S, M, M//2+1)
    f = _t(stars.flux, device, dtype)
    idx = torch.as_tensor(stars.stamp, device=device)
    for b in range(3):
        out[:, b].index_add_(0, idx, spec * f[:, b, None, None].to(cdt))
    return out


def _render_by_oversample(profile, params: dict, oversample: np.ndarray, device, dtype, kw) -> torch.Tensor:
    """Render rows in groups that share a sub-pixel count (compact sources need finer sampling)."""
    out = None
    for o in np.unique(oversample):
        sel = np.flatnonzero(oversample == o)
        img = render_profile(profile, {k: _t(np.asarray(v, float)[sel], device, dtype) for k, v in params.items()}, oversample=int(o), **kw)
        if out is None:
            out = torch.zeros((len(oversample),) + tuple(img.shape[1:]), device=device, dtype=dtype)
        out[torch.as_tensor(sel, device=device)] = img
    return out


def render_arcs(rows: pd.DataFrame, lens_x_arcsec: np.ndarray, lens_y_arcsec: np.ndarray, cfg: SimConfig,
                device: torch.device) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """The noise-free, PSF-convolved arc of every injection row (zeros on controls) on the stamp
    grid, its lens centred at (lens_x, lens_y) arcsec from the stamp centre; with the
    magnification (lensed over unlensed source flux inside the stamp, before the PSF) and the
    knots' share of the source flux. The PSF is each row's ``psf_fwhm_used_{g,r,z}``."""
    dtype = _dtype(cfg)
    N, s, B = cfg.stamp_size, cfg.pixel_scale_arcsec, len(rows)
    arc = torch.zeros((B, 3, N, N), device=device, dtype=dtype)
    magnification = np.zeros(B)
    knot_frac = np.zeros(B)
    inj = rows["is_control"].to_numpy() == 0
    if inj.any():
        r = rows[inj]
        ii = np.flatnonzero(inj)
        src_e = r["src_e"].to_numpy(float)
        src_q = (1 - src_e) / (1 + src_e)
        lens = {"theta_e_arcsec": r["theta_e_arcsec"], "lens_q": r["lens_q"], "lens_phi_rad": r["lens_phi_rad"],
                "shear_g1": r["shear_g1"], "shear_g2": r["shear_g2"], "src_x_arcsec": r["src_x_arcsec"], "src_y_arcsec": r["src_y_arcsec"],
                "lens_x_arcsec": np.asarray(lens_x_arcsec, float)[ii], "lens_y_arcsec": np.asarray(lens_y_arcsec, float)[ii]}
        smooth_p = {**lens, "src_reff_arcsec": r["src_reff_arcsec"], "src_n": r["src_sersic_n"], "src_q": src_q, "src_phi_rad": r["src_phi_rad"]}
        kw = dict(n_pix=N, pixel_scale_arcsec=s, threshold=cfg.supersample_threshold)
        reff = r["src_reff_arcsec"].to_numpy(float)
        smooth = _render_by_oversample(lensed_sersic, smooth_p, oversample_for(reff, s, cfg.oversample), device, dtype, kw)
        src_flux_r = mag_to_nmgy(r["src_r_mag"].to_numpy(float))
        gr, rz = r["src_g_minus_r"].to_numpy(float), r["src_r_minus_z"].to_numpy(float)
        kc = cfg.knot_config
        if kc is not None:
            u = uniforms_np(cfg.seed, STREAM_KNOTS, r["host_id"].to_numpy(), N_KNOT_UNIFORMS)
            kp = sample_knots(u, reff, src_q, r["src_phi_rad"].to_numpy(float), kc)
            knot_frac[ii] = kp.pop("flux_fraction")
        f_k = knot_frac[ii]
        smooth_flux = band_fluxes(22.5 - 2.5 * np.log10(src_flux_r * (1 - f_k)), gr, rz)
        units, fluxes = [smooth], [smooth_flux]
        unit_sum = smooth.sum(dim=(-1, -2)).double().cpu().numpy() * (1 - f_k)
        if kc is not None and (f_k > 0).any():
            knotted = np.flatnonzero(f_k > 0)
            kp_all = {**kp, **{k: np.asarray(v, float) for k, v in lens.items()}}
            smallest = np.min([np.where(kp[f"knot{i}_weight"] > 0, kp[f"knot{i}_sigma_arcsec"], np.inf) for i in range(MAX_KNOTS)], axis=0)
            os_k = oversample_for(smallest[knotted] * GAUSS_HALF_LIGHT_PER_SIGMA, s, cfg.oversample)
            kunit = torch.zeros_like(smooth)
            kunit[torch.as_tensor(knotted, device=device)] = _render_by_oversample(
                lensed_knots, {k: v[knotted] for k, v in kp_all.items()}, os_k, device, dtype, kw)
            knot_flux = np.where(f_k[:, None] > 0, band_fluxes(22.5 - 2.5 * np.log10(np.maximum(src_flux_r * f_k, 1e-30)),
                                                               r["src_knot_g_minus_r"].to_numpy(float), r["src_knot_r_minus_z"].to_numpy(float)), 0.0)
            units.append(kunit)
            fluxes.append(knot_flux)
            unit_sum = unit_sum + kunit.sum(dim=(-1, -2)).double().cpu().numpy() * f_k
        arc_psf = _psf_spectra(r, cfg, N, device, dtype)
        spec = sum(torch.fft.rfft2(u)[:, None] * _t(f, device, dtype)[:, :, None, None] for u, f in zip(units, fluxes))
        arc[torch.as_tensor(ii, device=device)] = torch.fft.irfft2(spec * arc_psf.spectra.to(dtype), s=(N, N))
        magnification[ii] = unit_sum
    return arc, magnification, knot_frac


def render_noise_free(rows: pd.DataFrame, cfg: SimConfig, device: torch.device) -> NoiseFree:
    """Scene and arc light of a batch of rows (all with cutout_ok = 1), before noise."""
    dtype = _dtype(cfg)
    N, s, B = cfg.stamp_size, cfg.pixel_scale_arcsec, len(rows)
    pad = cfg.host_pad_px
    M = N + 2 * pad
    scene = sample_scene(rows, cfg.scene, cfg.seed, grid_half_width_arcsec=M * s / 2.0)
    # the true PSF: the stated one (psf_fwhm_used_*) unless the host's core kind is psf_mismatch
    mismatch = scene.columns["psf_mismatch"]
    if not np.all(mismatch == 1.0):
        rows = rows.copy()
        for b in cfg.bands:
            rows[f"psf_fwhm_used_{b}"] = rows[f"psf_fwhm_used_{b}"].to_numpy(float) * mismatch

    # --- scene light on the padded grid, one FFT pass per band for all of it
    pre = torch.zeros((B, 3, M, M), device=device, dtype=dtype)
    for name, parts in scene.components.items():
        pre += render_components(parts, name, B, M, cfg, device, dtype)
    spec = torch.fft.rfft2(pre) + star_spectra(scene.stars, B, M, s, device, dtype)
    host_psf = _psf_spectra(rows, cfg, M, device, dtype)
    light = torch.fft.irfft2(spec * host_psf.spectra.to(dtype), s=(M, M))[..., pad: pad + N, pad: pad + N]

    # --- the arc, on the stamp grid, lens centred on the host
    arc, magnification, knot_frac = render_arcs(rows, scene.host_x_arcsec, scene.host_y_arcsec, cfg, device)
    return NoiseFree(light, arc, magnification, knot_frac, scene.columns)


def noise_inputs(rows: pd.DataFrame, cfg: SimConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per-band sky sigma (B, 3) from the depth and the effective gain (B, 3) of each stamp."""
    sigma = np.stack([sky_sigma_nmgy(rows[f"psfdepth_{b}"].to_numpy(float), rows[f"psf_fwhm_used_{b}"].to_numpy(float),
                                     cfg.pixel_scale_arcsec) for b in cfg.bands], axis=1)
    sky = cfg.noise_model.sky_mag_per_arcsec2
    gain = np.stack([effective_gain_e_per_nmgy(sigma[:, j], sky[b], cfg.pixel_scale_arcsec) for j, b in enumerate(cfg.bands)], axis=1)
    return sigma, gain


def render_rows(rows: pd.DataFrame, cfg: SimConfig, device: torch.device) -> tuple[pd.DataFrame, torch.Tensor]:
    """Render population rows: (rows with the scene columns and rendered metrics added, (B, 3, N, N)
    float32 nMgy on ``device``). Failed cutouts (cutout_ok = 0) are rendered with the rest, then
    hold zeros and zero metrics, as a failed Phase 4c row does."""
    dtype = _dtype(cfg)
    rows = rows.copy()
    ok = rows["cutout_ok"].to_numpy() == 1
    sigma, gain = noise_inputs(rows, cfg)
    nf = render_noise_free(rows, cfg, device)
    sig_t, gain_t = _t(sigma, device, dtype), _t(gain, device, dtype)
    inj = torch.as_tensor(rows["is_control"].to_numpy() == 0, device=device)
    keys = torch.as_tensor(np.array(rows["noise_seed"], dtype=np.int64), device=device)
    images = add_noise(nf.scene, nf.arc, sig_t, gain_t, keys, cfg.seed, cfg.noise_model, has_arc=inj).float()
    if not ok.all():
        images[torch.as_tensor(~ok, device=device)] = 0.0
    arc_r = nf.arc[:, 1:2]
    var = pixel_variance(nf.scene, nf.arc, sig_t, gain_t, cfg.noise_model)
    var_r = var[:, 1:2]
    metrics = {
        "arc_snr": (arc_r / var_r.sqrt()).flatten(1).amax(dim=1).clamp_min(0).double().cpu().numpy(),
        "total_injected_flux_r": arc_r.flatten(1).sum(dim=1).double().cpu().numpy(),
        "magnification": nf.magnification,
        "knot_flux_fraction": nf.knot_flux_fraction,
        **visibility_metrics(rows, nf.arc, var, nf.magnification),
    }
    mu = metrics["magnification"]
    with np.errstate(divide="ignore", invalid="ignore"):
        metrics["lensed_src_r_mag"] = np.where(mu > 0, rows["src_r_mag"].to_numpy(float) - 2.5 * np.log10(np.where(mu > 0, mu, 1.0)), 0.0)
    for k in METRIC_COLUMNS:
        rows[k] = np.where(ok, metrics[k], 0.0)
    rows["discoverable"] = rows["discoverable"].astype(np.int64)
    for k, v in nf.scene_columns.items():
        rows[k] = v
    rows["control_kind"] = np.where(rows["is_control"].to_numpy() == 1, rows["host_kind"].to_numpy(), "")
    for j, b in enumerate(cfg.bands):
        rows[f"sky_sigma_{b}_nmgy"] = sigma[:, j]
    return rows, images


def render_on_device(population: pd.DataFrame, cfg: SimConfig, device: torch.device) -> Iterator[tuple[pd.DataFrame, torch.Tensor]]:
    """``render_rows`` over batches of ``cfg.batch_size`` rows, in population order, pixels left on ``device``."""
    for start in range(0, len(population), cfg.batch_size):
        yield render_rows(population.iloc[start: start + cfg.batch_size], cfg, device)


def render_batches(population: pd.DataFrame, cfg: SimConfig, device: torch.device | None = None) -> Iterator[RenderedBatch]:
    """Yield rendered batches of ``cfg.batch_size`` rows, in population order, pixels in host memory."""
    for rows, images in render_on_device(population, cfg, device or resolve_device(cfg.device)):
        yield RenderedBatch(rows=rows, images=images.cpu().numpy())
