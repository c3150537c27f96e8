"""Rendering on the pixel grid: sub-pixel sampling, ray shooting, binning, PSF.

The grid: pixel (row i, column j) of an N x N stamp has its centre at
x = (j - (N-1)/2) * s, y = (i - (N-1)/2) * s arcsec (s = pixel scale). A pixel's value is the
mean surface brightness over an ``oversample`` x ``oversample`` grid of sub-pixel centres times
the pixel area, i.e. flux per pixel in the units of the profile's total flux (nMgy). 4x4 is
the reference sampling for arcs a few pixels wide.

Adaptive supersampling (``threshold`` > 0): every pixel is first sampled once at its centre;
the pixels whose value exceeds ``threshold`` x the stamp's brightest pixel, grown by one pixel
on each side, are then resampled at the full ``oversample``. Faint pixels keep their centre
value. ``threshold = 0`` supersamples every pixel (exactly the uniform sampling), which is what
the reference comparisons use; the default keeps the arc flux within 0.1% of it at a fraction
of the cost (see tests/test_lensing.py and benchmarks/bench_injection.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from dhs.simulate.psf import KernelSpectra
from dhs.simulate.sersic import sersic_surface_brightness
from dhs.simulate.shear import shear_deflection
from dhs.simulate.sie import sie_deflection

# Sub-pixel samples evaluated per chunk: small enough that the ~30 elementwise passes of a
# profile stay in cache, large enough that Python overhead is negligible.
_CHUNK_SAMPLES = 1 << 17

Params = dict[str, torch.Tensor]  # name -> (B,) per-stamp parameter
Profile = Callable[[torch.Tensor, torch.Tensor, Params], torch.Tensor]


def pixel_centres(n_pix: int, pixel_scale_arcsec: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """(N,) pixel-centre coordinates in arcsec, symmetric about the stamp centre."""
    idx = torch.arange(n_pix, device=device, dtype=torch.float64)
    return ((idx - (n_pix - 1) / 2.0) * pixel_scale_arcsec).to(dtype)


def subpixel_offsets(oversample: int, pixel_scale_arcsec: float, device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """(o*o,) x and y offsets of the sub-pixel centres from the pixel centre, in arcsec."""
    o = int(oversample)
    if o < 1:
        raise ValueError(f"oversample must be >= 1, got {oversample}")
    sub = ((torch.arange(o, device=device, dtype=torch.float64) + 0.5) / o - 0.5) * pixel_scale_arcsec
    dy, dx = torch.meshgrid(sub, sub, indexing="ij")
    return dx.reshape(-1).to(dtype), dy.reshape(-1).to(dtype)


def render_profile(
    profile: Profile,
    params: Params,
    *,
    n_pix: int,
    pixel_scale_arcsec: float,
    oversample: int,
    threshold: float = 0.0,
) -> torch.Tensor:
    """Flux per pixel (B, N, N) of ``profile(x, y, params)`` (surface brightness per arcsec^2).

    ``params`` values are (B,) tensors; the profile receives them gathered to the shape of the
    coordinate batch it is asked to evaluate, plus a trailing axis, so it broadcasts freely.
    """
    first = next(iter(params.values()))
    device, dtype, B = first.device, first.dtype, first.shape[0]
    area = pixel_scale_arcsec**2
    c = pixel_centres(n_pix, pixel_scale_arcsec, device, dtype)
    if threshold > 0 and oversample > 1:
        coarse = _evaluate_pixels(profile, params, c, torch.zeros(1, device=device, dtype=dtype),
                                  torch.zeros(1, device=device, dtype=dtype), None) * area
        peak = coarse.reshape(B, -1).amax(dim=1).clamp_min(torch.finfo(dtype).tiny)
        mask = coarse > threshold * peak[:, None, None]
        mask = F.max_pool2d(mask[:, None].to(dtype), 3, stride=1, padding=1)[:, 0] > 0
        image = coarse
    else:
        mask = None
        image = torch.empty((B, n_pix, n_pix), device=device, dtype=dtype)
    dx, dy = subpixel_offsets(oversample, pixel_scale_arcsec, device, dtype)
    fine = _evaluate_pixels(profile, params, c, dx, dy, mask) * area
    if mask is None:
        return fine
    image[mask] = fine
    return image


def _evaluate_pixels(profile: Profile, params: Params, c: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of the profile over the sub-pixel offsets for every pixel (mask None: (B, N, N))
    or for the masked pixels only (1-D, in ``mask.nonzero()`` order)."""
    first = next(iter(params.values()))
    B, N = first.shape[0], c.shape[0]
    if mask is None:
        b = torch.arange(B, device=c.device).repeat_interleave(N * N)
        rest = torch.arange(N * N, device=c.device).repeat(B)
        i, j = rest // N, rest % N
    else:
        b, i, j = mask.nonzero(as_tuple=True)
    n_sub = dx.shape[0]
    names = list(params)
    table = torch.stack([params[k] for k in names], dim=1)  # (B, P): one gather per chunk
    out = torch.empty(b.shape[0], device=c.device, dtype=c.dtype)
    step = max(1, _CHUNK_SAMPLES // n_sub)
    for s in range(0, b.shape[0], step):
        bb, ii, jj = b[s : s + step], i[s : s + step], j[s : s + step]
        x = c[jj][:, None] + dx[None, :]
        y = c[ii][:, None] + dy[None, :]
        rows = table[bb]
        p = {k: rows[:, n : n + 1] for n, k in enumerate(names)}
        out[s : s + step] = profile(x, y, p).mean(dim=1)
    return out.reshape(B, N, N) if mask is None else out


def lensed_sersic(x: torch.Tensor, y: torch.Tensor, p: Params) -> torch.Tensor:
    """Unit-flux Sersic source seen through an SIE + external shear centred at the origin."""
    ax, ay = sie_deflection(x, y, p["theta_e_arcsec"], p["lens_q"], p["lens_phi_rad"])
    sx, sy = shear_deflection(x, y, p["shear_g1"], p["shear_g2"])
    one = torch.ones((), dtype=x.dtype, device=x.device)
    return sersic_surface_brightness(
        x - ax - sx, y - ay - sy, one, p["src_reff_arcsec"], p["src_n"], p["src_q"], p["src_phi_rad"],
        p["src_x_arcsec"], p["src_y_arcsec"],
    )


def unlensed_sersic(x: torch.Tensor, y: torch.Tensor, p: Params) -> torch.Tensor:
    """Unit-flux Sersic centred at the origin (the host galaxy)."""
    one = torch.ones((), dtype=x.dtype, device=x.device)
    return sersic_surface_brightness(x, y, one, p["reff_arcsec"], p["n"], p["q"], p["phi_rad"])


def colour_and_blur(unit_images: torch.Tensor, flux_per_band: torch.Tensor, kernels: torch.Tensor | KernelSpectra) -> torch.Tensor:
    """(B, N, N) unit-flux images x (B, C) band fluxes, each band convolved with its kernel.

    ``kernels`` is (B, C, K, K) or their ``KernelSpectra``. Returns (B, C, N, N) in the flux
    units of ``flux_per_band``. The band flux is a scalar per band, so one forward FFT of the
    unit image serves every band.
    """
    if not isinstance(kernels, KernelSpectra):
        kernels = KernelSpectra(kernels, unit_images.shape[-1])
    return kernels.convolve(unit_images, flux_per_band)
