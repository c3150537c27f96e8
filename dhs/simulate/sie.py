"""Singular isothermal ellipsoid (SIE) deflection, lenstronomy convention.

theta_E is the *circularised* Einstein radius (lenstronomy ``SIE``/``NIE``):

    kappa(x', y') = (theta_E / 2) / sqrt(q x'^2 + y'^2 / q)

in the frame rotated by the position angle ``phi_rad`` (major axis along x', q = b/a <= 1).
Writing b = theta_E sqrt(q) turns this into kappa = b / (2 sqrt(q^2 x'^2 + y'^2)), whose
deflection is the Kormann et al. (1994) / Keeton (2001) closed form

    alpha_x' = b / e * arctan(e x' / psi),   alpha_y' = b / e * arctanh(e y' / psi),
    e = sqrt(1 - q^2),  psi = sqrt(q^2 x'^2 + y'^2).

Using theta_E as the major-axis scale instead (b = theta_E) inflates the effective Einstein
radius by 1/sqrt(q); the earlier pipeline shipped exactly that bug. q = 1 is the SIS.
"""

from __future__ import annotations

import torch

# Below this e^2 = 1 - q^2 the closed form loses precision; a two-term series is exact to
# O(e^4 u^4) < 1e-8 relative there.
_E2_SERIES = 1e-3


def q_phi_to_e1e2(q: torch.Tensor, phi_rad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """lenstronomy eccentricities: e1 = e cos 2phi, e2 = e sin 2phi with e = (1-q)/(1+q)."""
    e = (1.0 - q) / (1.0 + q)
    return e * torch.cos(2.0 * phi_rad), e * torch.sin(2.0 * phi_rad)


def sie_constants(theta_e_arcsec: torch.Tensor, q: torch.Tensor, phi_rad: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-lens constants of the deflection (computed once per stamp, not once per sample):
    the frame rotation, b = theta_E sqrt(q), q^2, e = sqrt(1 - q^2), and for the closed form
    e itself (1 where the series is used) and its inverse, plus e^2/3 and the series flag."""
    e = torch.sqrt(torch.clamp(1.0 - q * q, min=0.0))
    series = e * e < _E2_SERIES
    e_exact = torch.where(series, torch.ones_like(e), e)
    return {
        "cos_phi": torch.cos(phi_rad),
        "sin_phi": torch.sin(phi_rad),
        "b": theta_e_arcsec * torch.sqrt(q),
        "q2": q * q,
        "e_exact": e_exact,
        "inv_e_exact": 1.0 / e_exact,
        "e2_third": e * e / 3.0,
        "series": series.to(q.dtype),
    }


def sie_deflection_from_constants(dx_arcsec: torch.Tensor, dy_arcsec: torch.Tensor, k: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Deflection at offsets (dx, dy) from the lens centre, given ``sie_constants``.

    Written for a fused kernel: one rsqrt instead of four divisions, and both branches
    (closed form and the e -> 0 series) are plain arithmetic selected per lens."""
    cos_phi, sin_phi = k["cos_phi"], k["sin_phi"]
    xp = cos_phi * dx_arcsec + sin_phi * dy_arcsec
    yp = -sin_phi * dx_arcsec + cos_phi * dy_arcsec
    # The SIE is singular at the centre; a tiny floor on psi keeps the deflection finite
    # (bounded by b/e there) without touching any pixel-sized sample.
    inv_psi = torch.rsqrt((k["q2"] * xp * xp + yp * yp).clamp_min(1e-24))
    ux, uy = xp * inv_psi, yp * inv_psi
    series = k["series"] > 0
    fx = torch.where(series, ux * (1.0 - k["e2_third"] * ux * ux), torch.atan(k["e_exact"] * ux) * k["inv_e_exact"])
    fy = torch.where(series, uy * (1.0 + k["e2_third"] * uy * uy), torch.atanh(k["e_exact"] * uy) * k["inv_e_exact"])
    ax_p, ay_p = k["b"] * fx, k["b"] * fy
    return cos_phi * ax_p - sin_phi * ay_p, sin_phi * ax_p + cos_phi * ay_p


def sie_deflection(
    x_arcsec: torch.Tensor,
    y_arcsec: torch.Tensor,
    theta_e_arcsec: torch.Tensor,
    q: torch.Tensor,
    phi_rad: torch.Tensor,
    center_x_arcsec: torch.Tensor | float = 0.0,
    center_y_arcsec: torch.Tensor | float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Deflection (alpha_x, alpha_y) in arcsec of an SIE at image positions (x, y).

    All arguments broadcast. ``q`` in (0, 1]; ``phi_rad`` is the major-axis position angle
    measured from +x towards +y (lenstronomy's ``phi_G``).
    """
    return sie_deflection_from_constants(x_arcsec - center_x_arcsec, y_arcsec - center_y_arcsec,
                                         sie_constants(theta_e_arcsec, q, phi_rad))


def sis_deflection(
    x_arcsec: torch.Tensor,
    y_arcsec: torch.Tensor,
    theta_e_arcsec: torch.Tensor,
    center_x_arcsec: torch.Tensor | float = 0.0,
    center_y_arcsec: torch.Tensor | float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Singular isothermal sphere: alpha = theta_E * r_hat (the q = 1 SIE)."""
    dx = x_arcsec - center_x_arcsec
    dy = y_arcsec - center_y_arcsec
    r = torch.sqrt(dx * dx + dy * dy).clamp_min(1e-12)
    return theta_e_arcsec * dx / r, theta_e_arcsec * dy / r


def sie_convergence(
    x_arcsec: torch.Tensor,
    y_arcsec: torch.Tensor,
    theta_e_arcsec: torch.Tensor,
    q: torch.Tensor,
    phi_rad: torch.Tensor,
) -> torch.Tensor:
    """kappa = (theta_E/2) / sqrt(q x'^2 + y'^2/q); its area inside kappa=1 is pi theta_E^2."""
    cos_phi, sin_phi = torch.cos(phi_rad), torch.sin(phi_rad)
    xp = cos_phi * x_arcsec + sin_phi * y_arcsec
    yp = -sin_phi * x_arcsec + cos_phi * y_arcsec
    return 0.5 * theta_e_arcsec / torch.sqrt(q * xp * xp + yp * yp / q).clamp_min(1e-12)


__all__ = [
    "q_phi_to_e1e2",
    "sie_constants",
    "sie_deflection",
    "sie_deflection_from_constants",
    "sis_deflection",
    "sie_convergence",
]
