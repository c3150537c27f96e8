"""Render a sampled population into grz stamps (nMgy), batch by batch, on CPU or GPU.

Per stamp: host (Sersic, ``host_oversample``, rendered ``host_pad_px`` beyond the stamp edges
and cropped after the PSF), plus for injections the lensed source (SIE + shear, Sersic source
normalised to its total flux, ``oversample`` x ``oversample`` sub-pixels), each band convolved
with its own PSF (circularly on the stamp grid, see psf.py); then Gaussian sky noise from the band's
depth (and optional Poisson noise on the arc). The noise of each stamp comes from its own
seeded numpy generator (keyed by host, so paired stamps share it), so the pixels do not depend
on batch size or device.

Rendered metrics (controls carry 0):
- ``magnification``: lensed flux inside the stamp before PSF / source flux.
- ``total_injected_flux_r``: r-band arc flux inside the stamp after PSF (nMgy).
- ``arc_snr``: peak-pixel SNR of the noise-free r-band arc after PSF,
  max_pix(arc_r / sqrt(sigma_sky_r^2 + arc_var_r)) (the Phase 4d proxy definition).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from dhs.simulate.config import SimConfig
from dhs.simulate.noise import sky_sigma_nmgy
from dhs.simulate.population import mag_to_nmgy
from dhs.simulate.psf import PSFSpectra
from dhs.simulate.render import colour_and_blur, lensed_sersic, render_profile, unlensed_sersic


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"simulate.device is {device!r} but torch sees no CUDA device; use 'auto' or 'cpu'")
    return torch.device(device)


@dataclass
class RenderedBatch:
    rows: pd.DataFrame  # the population rows of this batch, with rendered metrics added
    images: np.ndarray  # (B, 3, N, N) float32 nMgy; failed cutouts hold zeros


def band_fluxes(mag_r: np.ndarray, g_minus_r: np.ndarray, r_minus_z: np.ndarray) -> np.ndarray:
    """(B, 3) g, r, z total fluxes in nMgy from an r magnitude and two colours."""
    return np.stack([mag_to_nmgy(mag_r + g_minus_r), mag_to_nmgy(mag_r), mag_to_nmgy(mag_r - r_minus_z)], axis=1)


def _t(a, device, dtype) -> torch.Tensor:
    return torch.tensor(np.asarray(a, dtype=np.float64), device=device, dtype=dtype)


def render_noise_free(rows: pd.DataFrame, cfg: SimConfig, device: torch.device) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noise-free (host, arc) images (B, 3, N, N) as float64 numpy, and the lensed unit-flux sums."""
    dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
    N, s = cfg.stamp_size, cfg.pixel_scale_arcsec
    B = len(rows)
    fwhm = np.stack([rows[f"psf_fwhm_used_{b}"].to_numpy() for b in cfg.bands], axis=1)
    # PSFs are per brick, so a batch holds few distinct FWHMs: build each kernel (and its FFT) once
    unique_fwhm, inverse = np.unique(fwhm, return_inverse=True)
    which = torch.as_tensor(inverse.reshape(fwhm.shape), device=device)
    psf_fwhm = _t(unique_fwhm, device, dtype)
    kernels = PSFSpectra.from_fwhm(psf_fwhm, N, s, model=cfg.psf_model, beta=cfg.moffat_beta)[which]

    # The host fills the stamp, so its light crosses the edges both ways: it is rendered on a
    # grid host_pad_px wider on each side, convolved there and cropped, so the light scattered
    # in from beyond the edge is present and the circular wrap lands in the cropped margin.
    pad = cfg.host_pad_px
    M = N + 2 * pad
    host_kernels = kernels if pad == 0 else PSFSpectra.from_fwhm(psf_fwhm, M, s, model=cfg.psf_model, beta=cfg.moffat_beta)[which]
    host_params = {
        "reff_arcsec": _t(rows["host_reff_arcsec"], device, dtype), "n": _t(rows["host_sersic_n"], device, dtype),
        "q": _t(rows["host_q"], device, dtype), "phi_rad": _t(rows["host_phi_rad"], device, dtype),
    }
    host_unit = render_profile(unlensed_sersic, host_params, n_pix=M, pixel_scale_arcsec=s,
                               oversample=cfg.host_oversample, threshold=cfg.host_supersample_threshold)
    host_flux = band_fluxes(rows["host_r_mag"].to_numpy(), rows["host_g_minus_r"].to_numpy(), rows["host_r_minus_z"].to_numpy())
    host = colour_and_blur(host_unit, _t(host_flux, device, dtype), host_kernels)[..., pad : pad + N, pad : pad + N]

    arc = torch.zeros_like(host)
    unit_sum = np.zeros(B)
    inj = (rows["is_control"].to_numpy() == 0)
    if inj.any():
        r = rows[inj]
        idx = torch.as_tensor(np.flatnonzero(inj), device=device)
        src_q = (1 - r["src_e"].to_numpy()) / (1 + r["src_e"].to_numpy())
        lens_params = {
            "theta_e_arcsec": r["theta_e_arcsec"], "lens_q": r["lens_q"], "lens_phi_rad": r["lens_phi_rad"],
            "shear_g1": r["shear_g1"], "shear_g2": r["shear_g2"], "src_x_arcsec": r["src_x_arcsec"],
            "src_y_arcsec": r["src_y_arcsec"], "src_reff_arcsec": r["src_reff_arcsec"], "src_n": r["src_sersic_n"],
            "src_q": src_q, "src_phi_rad": r["src_phi_rad"],
        }
        unit = render_profile(lensed_sersic, {k: _t(v, device, dtype) for k, v in lens_params.items()}, n_pix=N,
                              pixel_scale_arcsec=s, oversample=cfg.oversample, threshold=cfg.supersample_threshold)
        src_flux = band_fluxes(r["src_r_mag"].to_numpy(), r["src_g_minus_r"].to_numpy(), r["src_r_minus_z"].to_numpy())
        arc[idx] = colour_and_blur(unit, _t(src_flux, device, dtype), kernels[idx])
        unit_sum[inj] = unit.sum(dim=(-1, -2)).double().cpu().numpy()
    return host.double().cpu().numpy(), arc.double().cpu().numpy(), unit_sum


def add_noise(host: np.ndarray, arc: np.ndarray, rows: pd.DataFrame, cfg: SimConfig) -> tuple[np.ndarray, np.ndarray]:
    """Noisy images (float32) and per-band sky sigma (B, 3), one generator per noise_seed."""
    B, C, N, _ = host.shape
    sigma = np.stack(
        [sky_sigma_nmgy(rows[f"psfdepth_{b}"].to_numpy(), rows[f"psf_fwhm_used_{b}"].to_numpy(), cfg.pixel_scale_arcsec) for b in cfg.bands],
        axis=1,
    )
    out = np.empty((B, C, N, N), dtype=np.float32)
    seeds = rows["noise_seed"].to_numpy()
    for i in range(B):
        rng = np.random.default_rng([cfg.seed, 1, int(seeds[i])])
        sky = rng.standard_normal((C, N, N)) * sigma[i][:, None, None]
        img = host[i] + arc[i] + sky
        if cfg.arc_poisson_e_per_nmgy > 0:
            # arc shot noise: electrons ~ Poisson(arc * gain); drawn from its own stream so
            # a paired control keeps exactly the same sky realisation
            prng = np.random.default_rng([cfg.seed, 2, int(seeds[i])])
            g = cfg.arc_poisson_e_per_nmgy
            lam = np.clip(arc[i], 0, None) * g
            img = img + (prng.poisson(lam) - lam) / g
        out[i] = img
    return out, sigma


def arc_metrics(arc: np.ndarray, unit_sum: np.ndarray, sigma: np.ndarray, cfg: SimConfig) -> dict[str, np.ndarray]:
    arc_r = arc[:, 1]
    var = sigma[:, 1, None, None] ** 2
    if cfg.arc_poisson_e_per_nmgy > 0:
        var = var + np.clip(arc_r, 0, None) / cfg.arc_poisson_e_per_nmgy
    return {
        "arc_snr": (arc_r / np.sqrt(var)).reshape(len(arc), -1).max(axis=1).clip(min=0.0),
        "total_injected_flux_r": arc_r.reshape(len(arc), -1).sum(axis=1),
        "magnification": unit_sum,
    }


def render_batches(population: pd.DataFrame, cfg: SimConfig, device: torch.device | None = None) -> Iterator[RenderedBatch]:
    """Yield rendered batches of ``cfg.batch_size`` rows, in population order."""
    device = device or resolve_device(cfg.device)
    for start in range(0, len(population), cfg.batch_size):
        rows = population.iloc[start : start + cfg.batch_size].copy()
        ok = rows["cutout_ok"].to_numpy() == 1
        B, N = len(rows), cfg.stamp_size
        images = np.zeros((B, 3, N, N), dtype=np.float32)
        metrics = {k: np.zeros(B) for k in ("arc_snr", "total_injected_flux_r", "magnification")}
        sigma = np.zeros((B, 3))
        if ok.any():
            good = rows[ok]
            host, arc, unit_sum = render_noise_free(good, cfg, device)
            images[ok], sigma[ok] = add_noise(host, arc, good, cfg)
            for k, v in arc_metrics(arc, unit_sum, sigma[ok], cfg).items():
                metrics[k][ok] = v
        for k, v in metrics.items():
            rows[k] = v
        for j, b in enumerate(cfg.bands):
            rows[f"sky_sigma_{b}_nmgy"] = sigma[:, j]
        yield RenderedBatch(rows=rows, images=images)
