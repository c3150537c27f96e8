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


def sersic_constants(
    flux: torch.Tensor, r_eff_arcsec: torch.Tensor, n: torch.Tensor, q: torch.Tensor, phi_rad: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per-profile constants (computed once per stamp, not once per sample): the frame
    rotation, q and 1/q, log(1/R_e), 1/n, b_n and the amplitude I_e from the total flux."""
    return {
        "cos_phi": torch.cos(phi_rad),
        "sin_phi": torch.sin(phi_rad),
        "q": q,
        "inv_q": 1.0 / q,
        "log_inv_r_eff": -torch.log(r_eff_arcsec),
        "inv_n": 1.0 / n,
        "bn": sersic_bn(n),
        "amp": sersic_amp_from_total_flux(flux, r_eff_arcsec, n),
    }


def sersic_from_constants(dx_arcsec: torch.Tensor, dy_arcsec: torch.Tensor, k: dict[str, torch.Tensor]) -> torch.Tensor:
    """Surface brightness at offsets (dx, dy) from the profile centre, given ``sersic_constants``."""
    xp = k["cos_phi"] * dx_arcsec + k["sin_phi"] * dy_arcsec
    yp = -k["sin_phi"] * dx_arcsec + k["cos_phi"] * dy_arcsec
    # lenstronomy floors R at 1e-4 arcsec ("smoothing") to keep the cusp finite; do the same
    # (on R^2). (R/R_e)^(1/n) = exp(log(R^2)/(2n) + log(1/R_e)/n): no sqrt or pow, which cost
    # twice as much as exp and log in a fused kernel.
    r2 = (k["q"] * xp * xp + k["inv_q"] * yp * yp).clamp_min(1e-8)
    log_ratio = 0.5 * torch.log(r2) + k["log_inv_r_eff"]
    return k["amp"] * torch.exp(-k["bn"] * (torch.exp(log_ratio * k["inv_n"]) - 1.0))


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
    return sersic_from_constants(x_arcsec - center_x_arcsec, y_arcsec - center_y_arcsec,
                                 sersic_constants(flux, r_eff_arcsec, n, q, phi_rad))
