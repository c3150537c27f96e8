"""How visible an injected arc is: small pure kernels, units in the names.

Peak-pixel S/N (``arc_snr``, the Phase 4d proxy's definition) ranks an unresolved low-
magnification blob above an extended high-magnification arc of the same lensed flux: the blob
puts its flux in few pixels. What a person (and a matched filter) sees is the arc's integrated
S/N in the lens-subtracted image: ``matched_filter_snr`` below, the S/N of the optimal linear
filter (the noise-free arc itself as the template) against the pixel noise the stamp was drawn
with: sky plus the photon noise of host, field and arc,

    S/N_b = sqrt( sum_pixels arc_b^2 / var_b ),

taken in the best of g, r, z (LensPop's "best band"). Pixels are treated as independent: the
coadd's resampling correlation makes the true S/N somewhat lower (docs/simulation.md).

LensPop's discoverability (Collett 2015, ApJ 811, 20, Sect. 3), with s the PSF FWHM and r_s the
source's half-light radius, both in arcsec:
  resolved  theta_E^2 > r_s^2 + (s/2)^2,
  magnified mu > 3,
  arc-like  mu r_s > s/2 (the paper's criterion; the public code tests mu r_s > s),
  bright    S/N > 20 in the lens-subtracted image of the best band.
Here s is each stamp's own r-band PSF and the S/N the matched-filter one, so the rule is DR10's
per-row seeing and depth rather than LensPop's DES coadd (``dhs.simulate.detectability`` applies
it with LensPop's conditions to compare populations).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

LENSPOP_SNR_MIN = 20.0
LENSPOP_MU_MIN = 3.0


def matched_filter_snr(arc: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """(B, C) matched-filter S/N of a noise-free arc (B, C, N, N) against per-pixel noise
    variance (same shape, > 0): sqrt(sum arc^2 / var) per stamp and band."""
    return (arc.double() ** 2 / variance.double()).flatten(2).sum(dim=2).sqrt()


def mu_reff_over_psf(magnification, src_reff_arcsec, psf_fwhm_arcsec) -> np.ndarray:
    """mu r_s / s: the tangential extent of the lensed image (magnification x source half-light
    radius) in units of the PSF FWHM. Above ~0.5 the image is stretched beyond the PSF into an arc
    (LensPop's arc-like criterion); below, it is an unresolved blob whatever its brightness."""
    psf = np.asarray(psf_fwhm_arcsec, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.asarray(magnification, float) * np.asarray(src_reff_arcsec, float) / psf
    return np.where(psf > 0, out, np.nan)


def lenspop_criteria(theta_e_arcsec, src_reff_arcsec, psf_fwhm_arcsec, magnification, snr,
                     snr_min: float = LENSPOP_SNR_MIN, mu_min: float = LENSPOP_MU_MIN,
                     arc_rule: str = "paper") -> Mapping[str, np.ndarray]:
    """LensPop's criteria per row (arrays broadcast together; see the module docstring):
    ``resolved``, ``magnified``, ``arc`` (``arc_rule`` 'paper': mu r_s > s/2, 'code': mu r_s > s),
    ``bright`` (snr > snr_min) and ``discoverable`` (all four; multiple imaging is assumed, as every
    injection here has its source inside the caustic region)."""
    th, rs, s, mu, sn = np.broadcast_arrays(*(np.asarray(a, float) for a in (theta_e_arcsec, src_reff_arcsec, psf_fwhm_arcsec,
                                                                            magnification, snr)))
    if arc_rule not in ("paper", "code"):
        raise ValueError(f"arc_rule must be 'paper' or 'code', got {arc_rule!r}")
    resolved = th**2 > rs**2 + (s / 2.0) ** 2
    magnified = mu > mu_min
    arc = mu * rs > (s / 2.0 if arc_rule == "paper" else s)
    bright = sn > snr_min
    return {"resolved": resolved, "magnified": magnified, "arc": arc, "bright": bright,
            "discoverable": resolved & magnified & arc & bright}
