"""Sky noise from a 5-sigma point-source depth.

For a Gaussian PSF of FWHM f the noise-equivalent area is 4 pi s^2 (s = f / 2.3548 in pixels),
so a 5-sigma point source of flux F5 = 10^(-0.4 (m5 - 22.5)) nMgy implies a per-pixel sky
sigma

    sigma_pix = F5 / (5 sqrt(4 pi s^2))    [nMgy / pixel].

This is how the Legacy Surveys define psfdepth; it gives 0.002-0.008 nMgy for DR10 South.
"""

from __future__ import annotations

import math

import numpy as np

from dhs.simulate.psf import GAUSS_FWHM_PER_SIGMA

AB_ZP_NMGY = 22.5


def sky_sigma_nmgy(psfdepth_mag, psf_fwhm_arcsec, pixel_scale_arcsec: float = 0.262):
    """Per-pixel sky sigma (nMgy) from the 5-sigma point-source depth and the PSF FWHM."""
    f5 = 10.0 ** (-0.4 * (np.asarray(psfdepth_mag, float) - AB_ZP_NMGY))
    s_px = np.asarray(psf_fwhm_arcsec, float) / GAUSS_FWHM_PER_SIGMA / pixel_scale_arcsec
    return f5 / (5.0 * np.sqrt(4.0 * math.pi * s_px**2))
