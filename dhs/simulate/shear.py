"""External shear deflection, lenstronomy ``SHEAR`` convention.

alpha = [[g1, g2], [g2, -g1]] . theta with g1 = g cos 2phi, g2 = g sin 2phi (reference point
at the lens centre).
"""

from __future__ import annotations

import torch


def shear_deflection(
    x_arcsec: torch.Tensor, y_arcsec: torch.Tensor, g1: torch.Tensor, g2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    return g1 * x_arcsec + g2 * y_arcsec, g2 * x_arcsec - g1 * y_arcsec

