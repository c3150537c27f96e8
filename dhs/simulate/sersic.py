"""Elliptical Sersic light profile normalised to its total flux.

Conventions (those of lenstronomy ``SERSIC_ELLIPSE`` >= 1.10):
- elliptical radius R = sqrt(q x'^2 + y'^2 / q) in the frame rotated by ``phi_rad`` (major
  axis along x'), so ``r_eff_arcsec`` is the *circularised* half-light radius and the
  isophote R = const encloses area pi R^2 whatever q is;
- b_n = 1.9992 n - 0.3271 (Capaccioli 1989; lenstronomy's approximation, good to ~0.1% in
  flux for 0.5 <= n <= 10);
- I(R) = I_e exp(-b_n ((R/R_e)^(1/n) - 1)); the total flux is
  F = 2 pi n I_e R_e^2 e^{b_n} b_n^(-2n) Gamma(2n), so I_e is set analytically from F.

The profile is normalised in the source plane and never renormalised after lensing: the
lensed image keeps the magnification.
"""

from __future__ import annotations

import math

import torch


def sersic_bn(n: torch.Tensor) -> torch.Tensor:
    return (1.9992 * n - 0.3271).clamp_min(1e-5)


def sersic_amp_from_total_flux(
    flux: torch.Tensor, r_eff_arcsec: torch.Tensor, n: torch.Tensor
) -> torch.Tensor:
    """Surface brightness at R_e (flux per arcsec^2) that makes the profile integrate to ``flux``."""
    bn = sersic_bn(n)
    log_norm = (
        math.log(2.0 * math.pi)
        + torch.log(n)
        + 2.0 * torch.log(r_eff_arcsec)
        + bn
        - 2.0 * n * torch.log(bn)
        + torch.lgamma(2.0 * n)
    )
    return flux * torch.exp(-log_norm)


def sersic_surface_brightness(
    x_arcsec: torch.Tensor,
    y_arcsec: torch.Tensor,
    flux: torch.Tensor,
    r_eff_arcsec: torch.Tensor,
    n: torch.Tensor,
    q: torch.Tensor,
    phi_rad: torch.Tensor,
    center_x_arcsec: torch.Tensor | float = 0.0,
    center_y_arcsec: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """Surface brightness (flux units per arcsec^2) at (x, y); arguments broadcast."""
    dx = x_arcsec - center_x_arcsec
    dy = y_arcsec - center_y_arcsec
    cos_phi, sin_phi = torch.cos(phi_rad), torch.sin(phi_rad)
    xp = cos_phi * dx + sin_phi * dy
    yp = -sin_phi * dx + cos_phi * dy
    # lenstronomy floors R at 1e-4 arcsec ("smoothing") to keep the cusp finite; do the same.
    r = torch.sqrt(q * xp * xp + yp * yp / q).clamp_min(1e-4)
    bn = sersic_bn(n)
    amp = sersic_amp_from_total_flux(flux, r_eff_arcsec, n)
    return amp * torch.exp(-bn * ((r / r_eff_arcsec) ** (1.0 / n) - 1.0))
