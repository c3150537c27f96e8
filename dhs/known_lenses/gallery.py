"""A gallery PNG of known-lens cutouts (grz composites, ``dhs.contract.rgb``) with their scores,
drawn with matplotlib Agg.

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
from dhs.contract.rgb import grz_rgb

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
