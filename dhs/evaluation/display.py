"""How figures show the evaluation's numbers: the top of a completeness colour scale."""

from __future__ import annotations

import numpy as np

COLOUR_TOPS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)


def colour_top(values) -> float:
    """The top of a completeness colour scale: the smallest of COLOUR_TOPS at or above the largest
    finite value, so a surface whose cells all lie below 0.15 is not drawn in the bottom seventh
    of a 0-1 scale (the colour bar says where the scale ends)."""
    v = np.asarray(values, dtype=float)
    top = float(np.nanmax(v)) if np.isfinite(v).any() else 1.0
    return next((t for t in COLOUR_TOPS if top <= t), 1.0)
