"""Pixel helpers shared by the gates: reading rows of a cache split, sky level and sigma, and
normalising exactly as the model was trained to see stamps.

All images here are (N, 3, S, S) g, r, z in nMgy per pixel unless a name says "normalised".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import torch

from dhs.imaging.cache import annulus_mask_np
from dhs.models.loader import MAD_TO_SIGMA, NormConfig, normalize

BANDS = ("g", "r", "z")
# the sky annulus (fractions of the half-width), as the default normalisation uses
SKY_ANNULUS_FRAC = (0.65, 1.0)

# a scorer maps nMgy images (and their metadata, for hybrid models) to logits
ScoreFn = Callable[[np.ndarray, pd.DataFrame | None], np.ndarray]


def read_rows(images: np.ndarray, rows: np.ndarray, dtype=np.float32) -> np.ndarray:
    """Copy of ``images[rows]`` as ``dtype`` (a memmap is read in sorted order, returned in ``rows``
    order). ``dtype=None`` keeps the cache's dtype (float16 halves the memory of big reads)."""
    rows = np.asarray(rows, dtype=np.int64)
    order = np.argsort(rows, kind="stable")
    out = np.empty((len(rows),) + images.shape[1:], dtype=dtype or images.dtype)
    out[order] = images[rows[order]]
    return out


def chunks(n: int, size: int) -> Iterator[slice]:
    for s in range(0, n, size):
        yield slice(s, min(n, s + size))


def sky_level_and_sigma(images: np.ndarray, meta: pd.DataFrame | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per stamp and band (N, 3): sky level = median of the outer annulus; sky sigma =
    ``sky_sigma_{g,r,z}_nmgy`` from the metadata where finite and > 0, else the annulus MAD x 1.4826."""
    mask = annulus_mask_np(images.shape[-1], *SKY_ANNULUS_FRAC)
    ring = np.asarray(images, dtype=np.float32)[..., mask]  # (N, 3, P)
    level = np.median(ring, axis=-1)
    sigma = np.median(np.abs(ring - level[..., None]), axis=-1) * MAD_TO_SIGMA
    if meta is not None:
        for j, b in enumerate(BANDS):
            col = f"sky_sigma_{b}_nmgy"
            if col in meta.columns:
                v = pd.to_numeric(meta[col], errors="coerce").to_numpy(np.float64)
                ok = np.isfinite(v) & (v > 0)
                sigma[ok, j] = v[ok]
    return level, sigma


def normalised(images_nmgy: np.ndarray, norm: NormConfig, batch_size: int = 512,
               stats: np.ndarray | None = None) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield (slice, normalised float32 batch) exactly as training and inference normalise
    (``dhs.models.loader.normalize``: no augmentation, no core dropout). ``stats`` (N, 7): the cache's
    stored annulus statistics of these rows (``CachedSplit.norm_stats``), same result, faster."""
    for sl in chunks(len(images_nmgy), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images_nmgy[sl], dtype=np.float32))
        st = None if stats is None else torch.from_numpy(np.ascontiguousarray(stats[sl], dtype=np.float32))
        yield sl, normalize(x, norm, st).numpy()
