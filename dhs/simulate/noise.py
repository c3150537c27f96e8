"""Pixel noise of a DR10 South coadd: sky noise from the depth, photon noise of every source,
and the neighbour correlation that resampling leaves in a coadd.

**Sky.** For a Gaussian PSF of FWHM f the noise-equivalent area is 4 pi s^2 (s = f / 2.3548 in
pixels), so a 5-sigma point source of flux F5 = 10^(-0.4 (m5 - 22.5)) nMgy implies a per-pixel
sky sigma

    sigma_pix = F5 / (5 sqrt(4 pi s^2))    [nMgy / pixel],

which is how the Legacy Surveys define psfdepth; it gives 0.002-0.008 nMgy for DR10 South.

**Photons.** A coadd whose noise is sky-limited has per-pixel variance sigma_pix^2 = B / g, with
B the sky level per pixel (nMgy) and g the effective gain (photo-electrons per nMgy, summed over
the exposures). With B from the band's dark-sky surface brightness mu_sky (mag / arcsec^2),
B = 10^(-0.4 (mu_sky - 22.5)) s_pix^2, the gain of each stamp follows from its own depth:

    g = B / sigma_pix^2,

and a source contributing f nMgy to a pixel adds variance f / g (Poisson, in the Gaussian limit,
which holds for the thousands of electrons per nMgy of a coadd). Bright host cores are then
photon-noise dominated, as in real coadds.

**Correlation.** Each exposure is resampled onto the coadd grid by a Lanczos-3 kernel at a
sub-pixel phase of its own, which correlates neighbouring pixels. The noise power spectrum of the
coadd is then the mean over exposures of |L_u(k)|^2 (the phases u are uniform per exposure);
white noise filtered by the square root of that spectrum (normalised to keep the per-pixel
variance) has the same second moments. ``correlation: none`` keeps independent pixels.

Normal deviates come from ``dhs.simulate.keyed``: a stamp's noise depends only on its key
(paired stamps share it), never on the batch or the device.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from dhs.params.schema import DR10_PIXEL_SCALE_ARCSEC
from dhs.simulate import keyed
from dhs.simulate.psf import GAUSS_FWHM_PER_SIGMA

AB_ZP_NMGY = 22.5


def sky_sigma_nmgy(psfdepth_mag, psf_fwhm_arcsec, pixel_scale_arcsec: float = DR10_PIXEL_SCALE_ARCSEC):
    """Per-pixel sky sigma (nMgy) from the 5-sigma point-source depth and the PSF FWHM."""
    f5 = 10.0 ** (-0.4 * (np.asarray(psfdepth_mag, float) - AB_ZP_NMGY))
    s_px = np.asarray(psf_fwhm_arcsec, float) / GAUSS_FWHM_PER_SIGMA / pixel_scale_arcsec
    return f5 / (5.0 * np.sqrt(4.0 * math.pi * s_px**2))


def sky_level_nmgy(sky_mag_per_arcsec2, pixel_scale_arcsec: float = DR10_PIXEL_SCALE_ARCSEC):
    """Sky level per pixel (nMgy) from a surface brightness in mag / arcsec^2."""
    return 10.0 ** (-0.4 * (np.asarray(sky_mag_per_arcsec2, float) - AB_ZP_NMGY)) * pixel_scale_arcsec**2


def effective_gain_e_per_nmgy(sky_sigma_nmgy_, sky_mag_per_arcsec2, pixel_scale_arcsec: float = DR10_PIXEL_SCALE_ARCSEC):
    """Photo-electrons per nMgy of a sky-limited coadd: g = B / sigma_pix^2."""
    return sky_level_nmgy(sky_mag_per_arcsec2, pixel_scale_arcsec) / np.asarray(sky_sigma_nmgy_, float) ** 2


# ----------------------------------------------------------------------------- correlation
def lanczos3_weights(phase: torch.Tensor) -> torch.Tensor:
    """(..., 6) Lanczos-3 interpolation weights for taps j = -2..3 at sub-pixel phase u in [0, 1),
    normalised to sum 1 (as resampling codes do)."""
    j = torch.arange(-2, 4, device=phase.device, dtype=phase.dtype)
    t = phase[..., None] - j
    w = torch.sinc(t) * torch.sinc(t / 3.0)
    return w / w.sum(dim=-1, keepdim=True)


def lanczos_noise_filter(phases: torch.Tensor, n_pix: int) -> torch.Tensor:
    """(B, C, N, N//2 + 1) amplitude filter for rfft2 of white noise: the square root of the
    coadd's noise power spectrum, mean over exposures of |L_ux(kx)|^2 |L_uy(ky)|^2, normalised
    so that the per-pixel variance is unchanged. ``phases`` (B, C, E, 2): each exposure's
    (x, y) sub-pixel phase."""
    w = lanczos3_weights(phases)  # (B, C, E, 2, 6)
    j = torch.arange(-2, 4, device=phases.device, dtype=phases.dtype)
    k = torch.arange(n_pix, device=phases.device, dtype=phases.dtype)
    ang = -2.0 * math.pi * k[:, None] * j[None, :] / n_pix  # (N, 6)
    re = w @ torch.cos(ang).T  # (B, C, E, 2, N)
    im = w @ torch.sin(ang).T
    power = re**2 + im**2
    px, py = power[..., 0, : n_pix // 2 + 1], power[..., 1, :]  # rfft keeps kx = 0..N/2
    spec = (py[..., :, None] * px[..., None, :]).mean(dim=2)  # (B, C, N, N//2+1)
    # mean of the full 2-D spectrum = per-pixel variance factor; rfft halves count twice except
    # the kx = 0 and kx = N/2 columns
    weight = torch.full((n_pix // 2 + 1,), 2.0, device=phases.device, dtype=phases.dtype)
    weight[0] = 1.0
    if n_pix % 2 == 0:
        weight[-1] = 1.0
    mean = (spec * weight).sum(dim=(-1, -2)) / (n_pix * n_pix)
    return torch.sqrt(spec / mean[..., None, None])


def correlate(noise: torch.Tensor, amplitude: torch.Tensor) -> torch.Tensor:
    """White noise (B, C, N, N) filtered by an rfft2 amplitude (B, C, N, N//2 + 1)."""
    n = noise.shape[-1]
    return torch.fft.irfft2(torch.fft.rfft2(noise) * amplitude.to(noise.dtype), s=(n, n))


# ----------------------------------------------------------------------------- the noise of a stamp
@dataclass(frozen=True)
class NoiseModel:
    """``simulate.noise`` as the schema checked it (dhs.params.schema holds each default)."""

    photon_noise: bool
    # dark-sky surface brightness per band, mag / arcsec^2: sets the effective gain of each stamp
    sky_mag_per_arcsec2: Mapping[str, float]
    correlation: str               # lanczos3 | none
    n_exposures: int               # exposures resampled into the coadd (each with its own phase)

    @classmethod
    def from_params(cls, p: Mapping) -> "NoiseModel":
        """From the checked ``simulate.noise``."""
        return cls(**{k: dict(v) if k == "sky_mag_per_arcsec2" else v for k, v in p.items()})


def add_noise(scene: torch.Tensor, arc: torch.Tensor, sky_sigma: torch.Tensor, gain: torch.Tensor | None,
              keys: torch.Tensor, seed: int, model: NoiseModel, has_arc: torch.Tensor | None = None) -> torch.Tensor:
    """Noisy stamps (B, C, N, N) from noise-free scene light (host and field) and arc light.

    ``sky_sigma`` and ``gain`` are (B, C) (gain in e-/nMgy; None or photon_noise off: sky only).
    Three independent streams keyed by the stamp's ``keys``: sky + photon noise of the scene
    (shared by a paired control and injection), photon noise of the arc (only where
    ``has_arc``), and the resampling phases. A paired injection minus its control is then
    exactly the arc plus the arc's own photon noise.
    """
    B, C, N, _ = scene.shape
    var = sky_sigma[..., None, None].to(scene.dtype) ** 2
    photons = model.photon_noise and gain is not None
    inv_gain = None
    if photons:
        inv_gain = (1.0 / gain).to(scene.dtype)[..., None, None]
        var = var + scene.clamp_min(0) * inv_gain
    noise = keyed.normals(keyed.stamp_keys(seed, keyed.STREAM_SKY, keys), (C, N, N)).to(scene.dtype) * var.sqrt()
    if photons and has_arc is not None and bool(has_arc.any()):
        idx = has_arc.nonzero(as_tuple=True)[0]
        z = keyed.normals(keyed.stamp_keys(seed, keyed.STREAM_ARC_PHOTONS, keys[idx]), (C, N, N)).to(scene.dtype)
        noise[idx] += z * (arc[idx].clamp_min(0) * inv_gain[idx]).sqrt()
    if model.correlation == "lanczos3":
        phases = keyed.uniforms(keyed.stamp_keys(seed, keyed.STREAM_RESAMPLING, keys), (C, model.n_exposures, 2))
        noise = correlate(noise, lanczos_noise_filter(phases.to(torch.float64), N))
    return scene + arc + noise


def pixel_variance(scene: torch.Tensor, arc: torch.Tensor, sky_sigma: torch.Tensor, gain: torch.Tensor | None,
                   model: NoiseModel) -> torch.Tensor:
    """The per-pixel noise variance (B, C, N, N) that ``add_noise`` draws from."""
    var = sky_sigma[..., None, None].to(scene.dtype) ** 2
    if model.photon_noise and gain is not None:
        var = var + (scene + arc).clamp_min(0) / gain.to(scene.dtype)[..., None, None]
    return var.expand_as(scene)
