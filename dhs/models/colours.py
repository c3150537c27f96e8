"""Host colours measured from the stamp (never from truth columns), for colour conditioning.

g-r and r-z in AB magnitudes from the sky-subtracted flux in a central aperture of radius
``APERTURE_RADIUS_PX`` (4 px, ~1 arcsec: the LRG core, where host light dominates any arc), in
nMgy *before* normalisation and clipping (a normalised core is clipped at +-20 sigma and would
saturate every bright host to colour 0). Fluxes are softened, f -> (f + sqrt(f^2 + 4 f0^2)) / 2
with f0 = ``FLUX_FLOOR_NMGY``, so a faint or negative aperture gives a bounded colour instead
of NaN.
"""

from __future__ import annotations

import numpy as np

from dhs.imaging.cache import CachedSplit, annulus_mask_np

APERTURE_RADIUS_PX = 4.0
FLUX_FLOOR_NMGY = 0.05   # ~ the sky noise of the 50-pixel aperture at DR10 depth


def _aperture(size: int, radius_px: float) -> np.ndarray:
    c = (size - 1) / 2
    yy, xx = np.mgrid[:size, :size]
    return ((yy - c) ** 2 + (xx - c) ** 2) <= radius_px**2


def host_colours_nmgy(images: np.ndarray, sky_median: np.ndarray | None = None, radius_px: float = APERTURE_RADIUS_PX,
                      annulus: tuple[float, float] = (0.65, 1.0)) -> np.ndarray:
    """(N, 3, S, S) grz nMgy -> (N, 2) float32 [g-r, r-z]. ``sky_median`` (N, 3): per-band sky
    level; measured in the outer annulus when not given."""
    img = np.asarray(images, dtype=np.float32)
    if img.ndim != 4 or img.shape[1] != 3:
        raise ValueError(f"expected (N, 3, S, S) grz images, got {img.shape}")
    size = img.shape[-1]
    if sky_median is None:
        ring = annulus_mask_np(size, *annulus)
        sky_median = np.median(img[:, :, ring], axis=-1)
    ap = _aperture(size, radius_px)
    flux = img[:, :, ap].sum(axis=-1) - np.asarray(sky_median, np.float32) * ap.sum()
    soft = 0.5 * (flux + np.sqrt(flux * flux + 4 * FLUX_FLOOR_NMGY**2))
    mag = -2.5 * np.log10(soft)
    return np.stack([mag[:, 0] - mag[:, 1], mag[:, 1] - mag[:, 2]], axis=1).astype(np.float32)


def split_host_colours(split: CachedSplit, chunk: int = 8192) -> np.ndarray:
    """Colours of every row of a cached split, using the stored annulus medians when present."""
    n = len(split)
    out = np.empty((n, 2), np.float32)
    med_cols = ["norm_med_g", "norm_med_r", "norm_med_z"]
    stored = split.meta[med_cols].to_numpy(np.float32) if set(med_cols) <= set(split.meta.columns) else None
    for s in range(0, n, chunk):
        rows = slice(s, min(n, s + chunk))
        out[rows] = host_colours_nmgy(split.images[rows], None if stored is None else stored[rows])
    return out
