"""A gallery PNG of known-lens cutouts (grz composite) with their scores, drawn with matplotlib Agg.

Colour composite as the Legacy Survey viewer does it: z -> red, r -> green, g -> blue, each band
divided by its scale (g 0.0066, r 0.01, z 0.025 nMgy, legacypipe's DECam ``get_rgb`` scales),
then an arcsinh stretch ``asinh(x)`` mapped linearly from asinh(-1) (black) to asinh(300) (white)
and clipped: sky noise stays dark, arcs a few sigma above it show, and LRG cores do not burn out
over more than a few pixels.

Each panel: name, grade, theta_E (where known), the model's logit (the score sigmoid(logit)
saturates at 1.000 for confident lenses) and calibrated p; a
green frame if the lens passes the highlighted threshold, red if not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dhs import atomic

RGB_SCALES_NMGY = {"g": 0.0066, "r": 0.01, "z": 0.025}
STRETCH_MIN, STRETCH_MAX = -1.0, 300.0


def grz_rgb(cube_nmgy: np.ndarray) -> np.ndarray:
    """(S, S, 3) RGB in [0, 1] of a (3, S, S) g, r, z cube in nMgy (row 0 at the bottom when
    drawn with ``origin="lower"``, as FITS stores it)."""
    cube = np.asarray(cube_nmgy, dtype=np.float64)
    if cube.ndim != 3 or cube.shape[0] != 3:
        raise ValueError(f"expected a (3, S, S) grz cube, got shape {cube.shape}")
    lo, hi = np.arcsinh(STRETCH_MIN), np.arcsinh(STRETCH_MAX)
    planes = []
    for band, img in zip("zrg", cube[::-1]):  # R, G, B = z, r, g
        planes.append(np.clip((np.arcsinh(img / RGB_SCALES_NMGY[band]) - lo) / (hi - lo), 0.0, 1.0))
    return np.stack(planes, axis=-1)


def _fmt(v: float, spec: str) -> str:
    return "-" if v is None or not np.isfinite(v) else format(v, spec)


def write_gallery(path: str | Path, images_nmgy: np.ndarray, names: Sequence[str], grades: Sequence[str],
                  theta_e_arcsec: Sequence[float], logits: Sequence[float], probabilities: Sequence[float],
                  passed: Sequence[bool], title: str, ncols: int = 8) -> None:
    """Write the gallery of ``images_nmgy`` (N, 3, S, S) to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(images_nmgy)
    if not (len(names) == len(grades) == len(theta_e_arcsec) == len(logits) == len(probabilities) == len(passed) == n):
        raise ValueError("gallery: every per-lens sequence must have one entry per image")
    if n == 0:
        write_placeholder(path, title + "\n(no cutouts to show)")
        return
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.7 * ncols, 1.95 * nrows + 0.5), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for i in range(n):
        ax = axes.ravel()[i]
        ax.set_axis_on()
        ax.imshow(grz_rgb(images_nmgy[i]), origin="lower", interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        colour = "#1a9850" if passed[i] else "#d73027"
        for spine in ax.spines.values():
            spine.set_edgecolor(colour)
            spine.set_linewidth(2.5)
        theta = f" θE {_fmt(theta_e_arcsec[i], '.2f')}\"" if np.isfinite(theta_e_arcsec[i]) else ""
        ax.set_title(f"{str(names[i])[:20]}\n{grades[i]}{theta}\nlogit {_fmt(logits[i], '.1f')}  p {_fmt(probabilities[i], '.2f')}",
                     fontsize=6, color=colour)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    _save(fig, path, dpi=110)


def write_placeholder(path: str | Path, text: str) -> None:
    """A small PNG that says why there is no gallery (so the DVC plot output always exists)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 2))
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=9, wrap=True)
    _save(fig, path, dpi=100)


def _save(fig, path: str | Path, dpi: int) -> None:
    """Save atomically (temporary sibling, then rename) and close the figure."""
    atomic.save_figure(path, fig, dpi=dpi)
