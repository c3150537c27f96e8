"""A contract stamp (g, r, z in nMgy) as an RGB image, the one way every figure draws stamps.

Colour composite as the Legacy Survey viewer does it: z -> red, r -> green, g -> blue, each band
divided by its scale (g 0.0066, r 0.01, z 0.025 nMgy, legacypipe's DECam ``get_rgb`` scales),
then an arcsinh stretch ``asinh(x)`` mapped linearly from asinh(-1) (black) to asinh(300) (white)
and clipped: sky noise stays dark, arcs a few sigma above it show, and LRG cores do not burn out
over more than a few pixels.
"""

from __future__ import annotations

import numpy as np

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
