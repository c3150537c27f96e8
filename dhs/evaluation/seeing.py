"""The r-band seeing a stamp was observed (or simulated) with, in one place.

DOMAIN.md: theta_E/PSF uses ``psf_fwhm_used_r``, falling back to ``psfsize_r`` (the brick's
value) where the per-stamp FWHM is missing. Scores, completeness, sensitivity, the baseline and
the gates all read the PSF through this rule, so they bin the same rows the same way.
"""

from __future__ import annotations

import numpy as np


def psf_r_with_fallback(psf_fwhm_used_r: np.ndarray, psfsize_r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(psf_r_arcsec, fell_back): ``psf_fwhm_used_r`` where finite and > 0, else ``psfsize_r``
    where finite and > 0, else NaN; ``fell_back`` marks the rows that took ``psfsize_r``."""
    used = np.asarray(psf_fwhm_used_r, dtype=np.float64)
    size = np.asarray(psfsize_r, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        ok_used = np.isfinite(used) & (used > 0)
        ok_size = np.isfinite(size) & (size > 0)
    return np.where(ok_used, used, np.where(ok_size, size, np.nan)), ~ok_used & ok_size
