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
of the cost (see tests/simulate/test_lensing.py and benchmarks/bench_injection.py).

A profile is split into per-stamp constants (``prepare``: rotations, amplitudes, b_n, computed
once per stamp) and the per-sample formula (``evaluate``); the sampling loops around
``evaluate`` run as fused, compiled kernels (``dhs.simulate.fused``), eagerly when compilation
is off or unavailable. A plain function ``f(x, y, params)`` is accepted as a profile too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import math

import torch

from dhs.simulate import knots
from dhs.simulate.fused import fused, is_compiled_on
from dhs.simulate.psf import PSFSpectra
from dhs.simulate.sersic import sersic_constants, sersic_from_constants
from dhs.simulate.shear import shear_deflection
from dhs.simulate.sie import sie_constants, sie_deflection_from_constants

# Sub-pixel samples per call. Eager: small enough that the ~30 elementwise passes of a profile
# stay in cache. Compiled: one fused loop holds no temporaries, so calls can be much larger.
_CHUNK_SAMPLES_EAGER = 1 << 17
_CHUNK_SAMPLES_COMPILED = 1 << 21

Params = dict[str, torch.Tensor]  # name -> (B,) per-stamp parameter


@dataclass(frozen=True, eq=False)
class Profile:
    """A surface brightness (per arcsec^2) split for speed: ``prepare`` maps the (B,) per-stamp
    parameters to (B,) per-stamp constants once; ``evaluate(x, y, constants)`` is the
    per-sample formula, with each constant shaped to broadcast against x and y."""

    name: str
    prepare: Callable[[Params], Params]
    evaluate: Callable[[torch.Tensor, torch.Tensor, Params], torch.Tensor]

    def __call__(self, x: torch.Tensor, y: torch.Tensor, params: Params) -> torch.Tensor:
        return self.evaluate(x, y, self.prepare(params))


def as_profile(profile: Profile | Callable[[torch.Tensor, torch.Tensor, Params], torch.Tensor]) -> Profile:
    if isinstance(profile, Profile):
        return profile
    return _plain_profiles.setdefault(profile, Profile(getattr(profile, "__name__", "profile"), dict, profile))


_plain_profiles: dict = {}
_samplers: dict = {}


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
    profile: Profile | Callable,
    params: Params,
    *,
    n_pix: int,
    pixel_scale_arcsec: float,
    oversample: int,
    threshold: float = 0.0,
    compile: bool | None = None,
) -> torch.Tensor:
    """Flux per pixel (B, N, N) of ``profile`` (surface brightness per arcsec^2).

    ``params`` values are (B,) tensors. ``compile``: None follows ``dhs.simulate.fused``'s
    mode; False forces eager evaluation (same formulas, for comparison).
    """
    profile = as_profile(profile)
    first = next(iter(params.values()))
    device, dtype, B = first.device, first.dtype, first.shape[0]
    if B == 0:
        return torch.zeros((0, n_pix, n_pix), device=device, dtype=dtype)
    consts = profile.prepare(params)
    names = tuple(consts)
    table = torch.stack([torch.broadcast_to(consts[k], (B,)).to(dtype) for k in names], dim=1)  # (B, K)
    grid_fn, gather_fn = _sampler(profile, names)
    compiled = compile if compile is not None else is_compiled_on(device)
    chunk = _CHUNK_SAMPLES_COMPILED if compiled else _CHUNK_SAMPLES_EAGER
    area = pixel_scale_arcsec**2
    c = pixel_centres(n_pix, pixel_scale_arcsec, device, dtype)
    dx, dy = subpixel_offsets(oversample, pixel_scale_arcsec, device, dtype)
    if not (threshold > 0 and oversample > 1):
        return _on_grid(grid_fn, table, c, dx, dy, chunk, compile) * area
    zero = torch.zeros(1, device=device, dtype=dtype)
    image = _on_grid(grid_fn, table, c, zero, zero, chunk, compile) * area
    mask = supersample_mask(image, threshold)
    b, i, j = mask.nonzero(as_tuple=True)
    step = max(1, chunk // dx.shape[0])
    fine = torch.cat([gather_fn(table, b[s : s + step], i[s : s + step], j[s : s + step], c, dx, dy, compile=compile)
                      for s in range(0, b.shape[0], step)]) if b.numel() else image.new_zeros(0)
    image[mask] = fine * area
    return image


# A compact source behind a lens is sampled well once the sub-pixel spacing is below ~2/3 of its
# half-light radius: the flux error then stays ~1e-3 (median; 1e-2 near caustics), against 1-5% for
# a 0.05-0.03 arcsec source at 4 x 4 (tests/simulate/test_scene.py measures it against 32 x 32).
SUBPIXELS_PER_HALF_LIGHT_RADIUS = 1.5
MAX_OVERSAMPLE = 16


def oversample_for(half_light_radius_arcsec, pixel_scale_arcsec: float, base: int):
    """Sub-pixels per side for a source of this half-light radius: at least ``base``, raised in
    steps of 4 (up to MAX_OVERSAMPLE) until the sub-pixel spacing is <= r_half / 1.5."""
    import numpy as np

    need = np.ceil(pixel_scale_arcsec * SUBPIXELS_PER_HALF_LIGHT_RADIUS / np.maximum(np.asarray(half_light_radius_arcsec, float), 1e-6))
    steps = np.ceil(np.maximum(need, base) / 4.0) * 4
    return np.clip(steps, base, max(base, MAX_OVERSAMPLE)).astype(int)


def supersample_mask(centre_sampled: torch.Tensor, threshold: float) -> torch.Tensor:
    """(B, N, N) pixels that adaptive supersampling resamples: above ``threshold`` x the stamp's
    brightest centre-sampled pixel, grown by one pixel on each side."""
    peak = centre_sampled.reshape(centre_sampled.shape[0], -1).amax(dim=1).clamp_min(torch.finfo(centre_sampled.dtype).tiny)
    return _grow_by_one_pixel(centre_sampled > threshold * peak[:, None, None])


def _grow_by_one_pixel(mask: torch.Tensor) -> torch.Tensor:
    """3 x 3 binary dilation of (B, N, N) masks, as a row pass then a column pass (max_pool2d
    on float costs ~25x more on CPU)."""
    rows = mask.clone()
    rows[:, 1:, :] |= mask[:, :-1, :]
    rows[:, :-1, :] |= mask[:, 1:, :]
    out = rows.clone()
    out[:, :, 1:] |= rows[:, :, :-1]
    out[:, :, :-1] |= rows[:, :, 1:]
    return out


def _on_grid(grid_fn, table, c, dx, dy, chunk, compile) -> torch.Tensor:
    """(B, N, N) mean of the profile over the sub-pixel offsets at every pixel, in stamp chunks."""
    step = max(1, chunk // (c.shape[0] ** 2 * dx.shape[0]))
    return torch.cat([grid_fn(table[s : s + step], c, dx, dy, compile=compile) for s in range(0, table.shape[0], step)])


def _sampler(profile: Profile, names: tuple[str, ...]):
    """The two sampling loops for one profile, fused: every pixel of the grid, or listed pixels."""
    key = (profile, names)
    if key not in _samplers:
        evaluate = profile.evaluate

        def unpack(rows: torch.Tensor, lead: int) -> Params:
            shape = (rows.shape[0],) + (1,) * lead
            return {k: rows[:, n].reshape(shape) for n, k in enumerate(names)}

        def on_grid(table, c, dx, dy):
            n, s = c.shape[0], dx.shape[0]
            x = (c[None, :, None] + dx[None, None, :]).expand(n, n, s).reshape(1, -1)
            y = (c[:, None, None] + dy[None, None, :]).expand(n, n, s).reshape(1, -1)
            return evaluate(x, y, unpack(table, 1)).reshape(-1, n, n, s).mean(dim=-1)

        def at_pixels(table, b, i, j, c, dx, dy):
            x = c[j][:, None] + dx[None, :]
            y = c[i][:, None] + dy[None, :]
            return evaluate(x, y, unpack(table[b], 1)).mean(dim=1)

        _samplers[key] = (fused(on_grid), fused(at_pixels))
    return _samplers[key]


# ----------------------------------------------------------------------------- profiles
def _sub(k: Params, prefix: str) -> Params:
    return {name[len(prefix):]: v for name, v in k.items() if name.startswith(prefix)}


def _centre(p: Params, key_x: str, key_y: str, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A profile's centre (arcsec from the stamp centre); absent keys mean the stamp centre."""
    zero = torch.zeros_like(like)
    return p.get(key_x, zero), p.get(key_y, zero)


def _ray_trace_constants(p: Params) -> Params:
    lens = sie_constants(p["theta_e_arcsec"], p["lens_q"], p["lens_phi_rad"])
    cx, cy = _centre(p, "lens_x_arcsec", "lens_y_arcsec", p["theta_e_arcsec"])
    return {**{f"lens_{k}": v for k, v in lens.items()}, "cx": cx, "cy": cy,
            "shear_g1": p["shear_g1"], "shear_g2": p["shear_g2"],
            "beta_x": p["src_x_arcsec"], "beta_y": p["src_y_arcsec"]}


def _source_plane(x: torch.Tensor, y: torch.Tensor, k: Params) -> tuple[torch.Tensor, torch.Tensor]:
    """Offsets from the source centre in the source plane of image positions (x, y): SIE and
    shear about the lens centre (cx, cy), source centre beta relative to the lens centre."""
    dx, dy = x - k["cx"], y - k["cy"]
    ax, ay = sie_deflection_from_constants(dx, dy, _sub(k, "lens_"))
    sx, sy = shear_deflection(dx, dy, k["shear_g1"], k["shear_g2"])
    return dx - ax - sx - k["beta_x"], dy - ay - sy - k["beta_y"]


def _lensed_sersic_constants(p: Params) -> Params:
    one = torch.ones((), dtype=p["src_n"].dtype, device=p["src_n"].device)
    src = sersic_constants(one, p["src_reff_arcsec"], p["src_n"], p["src_q"], p["src_phi_rad"])
    return {**_ray_trace_constants(p), **{f"src_{k}": v for k, v in src.items()}}


def _lensed_sersic_at(x: torch.Tensor, y: torch.Tensor, k: Params) -> torch.Tensor:
    bx, by = _source_plane(x, y, k)
    return sersic_from_constants(bx, by, _sub(k, "src_"))


# Unit-flux Sersic source seen through an SIE + external shear. Parameters: theta_e_arcsec,
# lens_q, lens_phi_rad, shear_g1, shear_g2, src_x_arcsec, src_y_arcsec (source centre relative to
# the lens centre), src_reff_arcsec, src_n, src_q, src_phi_rad; optional lens_x_arcsec,
# lens_y_arcsec (lens centre relative to the stamp centre, default 0).
lensed_sersic = Profile("lensed_sersic", _lensed_sersic_constants, _lensed_sersic_at)


def _lensed_knots_constants(p: Params) -> Params:
    out = _ray_trace_constants(p)
    for i in range(knots.MAX_KNOTS):
        s2 = p[f"knot{i}_sigma_arcsec"] ** 2
        out[f"k{i}_x"], out[f"k{i}_y"] = p[f"knot{i}_x_arcsec"], p[f"knot{i}_y_arcsec"]
        out[f"k{i}_a"] = p[f"knot{i}_weight"] / (2.0 * math.pi * s2)
        out[f"k{i}_c"] = -0.5 / s2
    return out


def _lensed_knots_at(x: torch.Tensor, y: torch.Tensor, k: Params) -> torch.Tensor:
    bx, by = _source_plane(x, y, k)
    out = torch.zeros_like(bx)
    for i in range(knots.MAX_KNOTS):
        dx, dy = bx - k[f"k{i}_x"], by - k[f"k{i}_y"]
        out = out + k[f"k{i}_a"] * torch.exp(k[f"k{i}_c"] * (dx * dx + dy * dy))
    return out


# Star-forming knots of a source seen through the same lens: a sum of circular Gaussians in the
# source plane, knot i at (knot{i}_x_arcsec, knot{i}_y_arcsec) from the source centre with width
# knot{i}_sigma_arcsec and weight knot{i}_weight (weights sum to 1: unit total flux; unused knots
# have weight 0), for i < dhs.simulate.knots.MAX_KNOTS; lens parameters as lensed_sersic.
lensed_knots = Profile("lensed_knots", _lensed_knots_constants, _lensed_knots_at)


def _host_constants(p: Params) -> Params:
    one = torch.ones((), dtype=p["n"].dtype, device=p["n"].device)
    cx, cy = _centre(p, "x_arcsec", "y_arcsec", p["n"])
    return {**sersic_constants(one, p["reff_arcsec"], p["n"], p["q"], p["phi_rad"]), "cx": cx, "cy": cy}


def _host_at(x: torch.Tensor, y: torch.Tensor, k: Params) -> torch.Tensor:
    return sersic_from_constants(x - k["cx"], y - k["cy"], k)


# Unit-flux Sersic (a galaxy seen directly): reff_arcsec, n, q, phi_rad; optional x_arcsec,
# y_arcsec (centre relative to the stamp centre, default 0).
unlensed_sersic = Profile("unlensed_sersic", _host_constants, _host_at)


def colour_and_blur(unit_images: torch.Tensor, flux_per_band: torch.Tensor, spectra: PSFSpectra) -> torch.Tensor:
    """(B, N, N) unit-flux images x (B, C) band fluxes, each band convolved with its PSF.

    Returns (B, C, N, N) in the flux units of ``flux_per_band``. The band flux is a scalar per
    band, so one forward FFT of the unit image serves every band.
    """
    return spectra.convolve(unit_images, flux_per_band)
