"""Radial geometry of a square stamp: pixel radii, integer-radius annuli, and their index tables.

Conventions (shared by the loader's radial-profile subtraction and the gates):

- the stamp centre is ((N-1)/2, (N-1)/2), the fixed point of the 8 dihedral symmetries;
- a pixel's radius ``r_px`` is its Euclidean distance from that centre, in pixels;
- annulus k holds the pixels with k <= r_px < k+1 (``floor(r_px)``), from 0 out to the corners
  (k = floor((N-1)/sqrt(2))), so every pixel belongs to exactly one annulus;
- the "core" of radius R is the disc r_px <= R (R = 5 px: 80 pixels, about the central 10x10).

numpy only, cached per stamp size: the tables are pure geometry.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np


def radius_px(size: int) -> np.ndarray:
    """(N, N) distance of each pixel centre from the stamp centre (N-1)/2, in pixels."""
    if size < 2:
        raise ValueError(f"stamp size must be >= 2 pixels, got {size}")
    c = (size - 1) / 2.0
    yy, xx = np.indices((size, size))
    return np.hypot(yy - c, xx - c)


def core_mask(size: int, radius_px_: float) -> np.ndarray:
    """(N, N) bool: pixels with r_px <= radius_px_ (the central disc)."""
    if radius_px_ <= 0:
        raise ValueError(f"core radius must be > 0 pixels, got {radius_px_}")
    return radius_px(size) <= radius_px_


@dataclass(frozen=True)
class AnnulusTable:
    """Integer-radius annuli of an N x N stamp as a padded index table.

    ``index`` (K, M) flat pixel indices of annulus k in row-major order, padded with 0;
    ``valid`` (K, M) marks the real entries; ``counts`` (K,) pixels per annulus;
    ``bin_of_pixel`` (N*N,) annulus of every pixel; ``node_radius_px`` (K,) the radius of the pixel
    holding the lower median of a radially decreasing profile in annulus k.
    ``interp_lo`` / ``interp_w`` (N*N,): a pixel's radius lies between the node radii of
    annuli lo and lo+1 with weight w on lo+1 (clamped at the ends), for interpolating a profile.
    """

    size: int
    index: np.ndarray
    valid: np.ndarray
    counts: np.ndarray
    bin_of_pixel: np.ndarray
    node_radius_px: np.ndarray
    interp_lo: np.ndarray
    interp_w: np.ndarray

    @property
    def n_annuli(self) -> int:
        return int(self.counts.size)


@lru_cache(maxsize=8)
def annulus_table(size: int) -> AnnulusTable:
    r = radius_px(size).reshape(-1)
    k = np.floor(r).astype(np.int64)
    n_bins = int(k.max()) + 1
    counts = np.bincount(k, minlength=n_bins)
    order = np.argsort(k, kind="stable")  # row-major order inside each annulus
    m = int(counts.max())
    index = np.zeros((n_bins, m), dtype=np.int64)
    valid = np.zeros((n_bins, m), dtype=bool)
    start = 0
    for b, c in enumerate(counts):
        index[b, :c] = order[start : start + c]
        valid[b, :c] = True
        start += c
    # node radius of each annulus: where a radially decreasing profile takes the value that the
    # (lower) median of the annulus picks, so interpolating between nodes reproduces it closely
    node_r = np.array([np.sort(r[index[b, :c]])[::-1][(c - 1) // 2] for b, c in enumerate(counts)])
    lo = np.clip(np.searchsorted(node_r, r, side="right") - 1, 0, n_bins - 2)
    w = np.clip((r - node_r[lo]) / (node_r[lo + 1] - node_r[lo]), 0.0, 1.0)
    for a in (index, valid, counts, k, node_r, lo, w):
        a.setflags(write=False)
    return AnnulusTable(size, index, valid, counts, k, node_r, lo, w)


def centre_crop(images: np.ndarray, size_px: int) -> np.ndarray | None:
    """The central ``size_px`` x ``size_px`` of (..., S, S) images, the centre pixel (S-1)/2 kept
    at the centre; None when it cannot be (S smaller than ``size_px``, or an odd difference)."""
    s = images.shape[-1]
    if s == size_px:
        return images
    if s < size_px or (s - size_px) % 2:
        return None
    o = (s - size_px) // 2
    return images[..., o : o + size_px, o : o + size_px]
