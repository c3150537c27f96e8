"""The r-band seeing a stamp was observed (or simulated) with, in one place.

The rule (docs/conventions.md, PSF): theta_E/PSF uses ``psf_fwhm_used_r``, the FWHM of the PSF
the stamp was made with, falling back to ``psfsize_r`` (the brick's value) where the per-stamp
FWHM is missing, NaN or <= 0. The score table, completeness, sensitivity, the baseline and the
gates all read the PSF through this module, so they bin the same rows the same way. Other bands
(the ring probe's g and z) fall back to ``psfsize_r`` times the survey's FWHM ratio.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd


def psf_r_with_fallback(psf_fwhm_used_r: np.ndarray, psfsize_r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(psf_r_arcsec, fell_back): ``psf_fwhm_used_r`` where finite and > 0, else ``psfsize_r``
    where finite and > 0, else NaN; ``fell_back`` marks the rows that took ``psfsize_r``."""
    used = np.asarray(psf_fwhm_used_r, dtype=np.float64)
    size = np.asarray(psfsize_r, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        ok_used = np.isfinite(used) & (used > 0)
        ok_size = np.isfinite(size) & (size > 0)
    return np.where(ok_used, used, np.where(ok_size, size, np.nan)), ~ok_used & ok_size


def _column(df: pd.DataFrame, name: str) -> np.ndarray:
    return pd.to_numeric(df[name], errors="coerce").to_numpy(np.float64) if name in df else np.full(len(df), np.nan)


def psf_r_arcsec(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The rule on a table with ``psf_fwhm_used_r`` and/or ``psfsize_r`` (an absent column counts
    as missing): (psf_r_arcsec, fell_back)."""
    return psf_r_with_fallback(_column(df, "psf_fwhm_used_r"), _column(df, "psfsize_r"))


def psf_fwhm_bands(df: pd.DataFrame, ratio: Mapping[str, float], bands: str = "grz") -> np.ndarray:
    """(N, len(bands)) PSF FWHM in arcsec: ``psf_fwhm_used_<band>`` where finite and > 0, else
    ``psfsize_r`` x ``ratio[band]`` (the band's FWHM over r's); NaN where neither exists."""
    size_r = _column(df, "psfsize_r")
    return np.stack([psf_r_with_fallback(_column(df, f"psf_fwhm_used_{b}"), size_r * float(ratio[b]))[0] for b in bands], axis=1)
