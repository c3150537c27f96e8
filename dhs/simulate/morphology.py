"""Light profiles of the galaxies that are not smooth ellipticals: the features that real lens
searches confuse with arcs (spiral arms, rings, tidal tails). Each is a ``Profile`` of unit
total flux, so a component's flux is set by the scene like any other; all are centred at
(x_arcsec, y_arcsec) from the stamp centre and inclined like the Sersic profiles:

- the frame is rotated by ``phi_rad`` (major axis along x'), and the elliptical radius is
  R = sqrt(q x'^2 + y'^2 / q) (the circularised radius of ``dhs.simulate.sersic``), which keeps
  the area inside R = const at pi R^2, so a profile of R integrates as if it were round;
- the angle in the plane of the galaxy is theta = atan2(y' / q, x') (the de-projected azimuth of
  a thin disc seen at axis ratio q).

Profiles:

- ``ring``: a Gaussian annulus I = A exp(-(R - R0)^2 / (2 w^2)) (1 + a cos(m (theta - theta0)))
  with R0 = ``radius_arcsec``, w = ``width_arcsec`` and an azimuthal lumpiness of amplitude a < 1
  and order m (its azimuthal mean is 1, so the flux is that of the smooth ring):
  integral = 2 pi A [w^2 exp(-R0^2 / 2w^2) + R0 w sqrt(pi/2) (1 + erf(R0 / (sqrt(2) w)))].
- ``spiral_arms``: an exponential disc (Sersic n = 1 of half-light radius ``reff_arcsec``)
  modulated by m logarithmic arms, M = ((1 + cos(m (theta - theta0) - (m / tan(pitch)) ln(r / r_s))) / 2)^p
  / C(p) with r = R / sqrt(q) the radius in the disc plane, r_s its scale length, and
  C(p) = Gamma(p + 1/2) / (sqrt(pi) Gamma(p + 1)) the azimuthal mean of the numerator, so the arms
  carry exactly the disc's flux whatever their pitch, phase or sharpness p.
- ``tidal_tail``: a stream of Gaussian cross-section w along a spiral path
  r(t) = R0 exp(k t) at angle theta0 + d t about its galaxy (t in [0, T] radians, d = +-1), its
  brightness fading as exp(-t / tau) and tapered smoothly at both ends; flux normalised with
  the thin-stream approximation F = A sqrt(2 pi) w int r(t) f(t) dt (the radial integral of the
  Gaussian cross-section; accurate to ~1% for w << R0; tested).
"""

from __future__ import annotations

import math

import torch

from dhs.simulate.render import Profile, Params
from dhs.simulate.sersic import sersic_bn


def _frame(p: Params) -> Params:
    zero = torch.zeros_like(p["q"])
    return {"cos_phi": torch.cos(p["phi_rad"]), "sin_phi": torch.sin(p["phi_rad"]), "q": p["q"], "inv_q": 1.0 / p["q"],
            "cx": p.get("x_arcsec", zero), "cy": p.get("y_arcsec", zero)}


def _rotate(x: torch.Tensor, y: torch.Tensor, k: Params) -> tuple[torch.Tensor, torch.Tensor]:
    dx, dy = x - k["cx"], y - k["cy"]
    return k["cos_phi"] * dx + k["sin_phi"] * dy, -k["sin_phi"] * dx + k["cos_phi"] * dy


# ----------------------------------------------------------------------------- ring
def ring_flux_integral(radius: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """int_0^inf exp(-(R - R0)^2 / 2w^2) 2 pi R dR."""
    return 2.0 * math.pi * (width**2 * torch.exp(-0.5 * (radius / width) ** 2)
                            + radius * width * math.sqrt(math.pi / 2.0) * (1.0 + torch.erf(radius / (math.sqrt(2.0) * width))))


def _ring_constants(p: Params) -> Params:
    k = _frame(p)
    k.update({"r0": p["radius_arcsec"], "inv_2w2": 0.5 / p["width_arcsec"] ** 2,
              "amp": 1.0 / ring_flux_integral(p["radius_arcsec"], p["width_arcsec"]),
              "lump": p["lump_amplitude"], "m": p["lump_order"], "theta0": p["lump_phase_rad"]})
    return k


def _ring_at(x: torch.Tensor, y: torch.Tensor, k: Params) -> torch.Tensor:
    xp, yp = _rotate(x, y, k)
    r = torch.sqrt(k["q"] * xp * xp + k["inv_q"] * yp * yp)
    theta = torch.atan2(yp * k["inv_q"], xp)
    d = r - k["r0"]
    return k["amp"] * torch.exp(-d * d * k["inv_2w2"]) * (1.0 + k["lump"] * torch.cos(k["m"] * (theta - k["theta0"])))


# Parameters: radius_arcsec, width_arcsec, q, phi_rad, lump_amplitude (< 1), lump_order, lump_phase_rad,
# optional x_arcsec, y_arcsec.
ring = Profile("ring", _ring_constants, _ring_at)


# ----------------------------------------------------------------------------- spiral arms
def arm_mean(sharpness: torch.Tensor) -> torch.Tensor:
    """Azimuthal mean of ((1 + cos u) / 2)^p: Gamma(p + 1/2) / (sqrt(pi) Gamma(p + 1))."""
    return torch.exp(torch.lgamma(sharpness + 0.5) - torch.lgamma(sharpness + 1.0) - 0.5 * math.log(math.pi))


def _arms_constants(p: Params) -> Params:
    k = _frame(p)
    one = torch.ones_like(p["q"])
    bn = sersic_bn(one)  # exponential disc: n = 1
    # Sersic n = 1 normalised to unit flux: I_e = 1 / (2 pi R_e^2 e^b b^-2 Gamma(2))
    amp_e = 1.0 / (2.0 * math.pi * p["reff_arcsec"] ** 2 * torch.exp(bn) * bn ** (-2.0))
    k.update({"amp0": amp_e * torch.exp(bn) / arm_mean(p["sharpness"]),  # central surface brightness / C(p)
              "inv_h": bn / p["reff_arcsec"],  # exp(-b R / R_e): scale length R_e / b
              "m": p["n_arms"], "wind": p["n_arms"] / torch.tan(p["pitch_rad"]), "theta0": p["arm_phase_rad"],
              "p": p["sharpness"], "log_h": torch.log(p["reff_arcsec"] / bn)})
    return k


def _arms_at(x: torch.Tensor, y: torch.Tensor, k: Params) -> torch.Tensor:
    xp, yp = _rotate(x, y, k)
    r_ell2 = (k["q"] * xp * xp + k["inv_q"] * yp * yp).clamp_min(1e-8)
    r_ell = torch.sqrt(r_ell2)
    theta = torch.atan2(yp * k["inv_q"], xp)
    # radius in the disc plane: r = R / sqrt(q); the log-spiral phase uses ln(r / h)
    log_r = torch.log(r_ell) - 0.5 * torch.log(k["q"])
    phase = k["m"] * (theta - k["theta0"]) - k["wind"] * (log_r - k["log_h"])
    mod = torch.exp(k["p"] * torch.log((0.5 * (1.0 + torch.cos(phase))).clamp_min(1e-30)))
    return k["amp0"] * torch.exp(-k["inv_h"] * r_ell) * mod


# Parameters: reff_arcsec (of the exponential disc), q, phi_rad, n_arms, pitch_rad, arm_phase_rad,
# sharpness (p >= 1), optional x_arcsec, y_arcsec.
spiral_arms = Profile("spiral_arms", _arms_constants, _arms_at)


# ----------------------------------------------------------------------------- tidal tail
_TAIL_QUAD = 128
_TAPER = 0.15  # fraction of the length over which each end fades in / out


def _tail_weight(t: torch.Tensor, length: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """Brightness along the tail at t in [0, length]: exp(-t / tau) with smooth ends, 0 outside."""
    s = (t / length).clamp(0.0, 1.0)
    edge = torch.clamp(torch.minimum(s, 1.0 - s) / _TAPER, 0.0, 1.0)
    inside = ((t >= 0) & (t <= length)).to(t.dtype)
    return torch.exp(-t / tau) * edge * edge * (3.0 - 2.0 * edge) * inside


def _tail_constants(p: Params) -> Params:
    zero = torch.zeros_like(p["radius_arcsec"])
    length, tau, k_growth = p["length_rad"], p["fade_rad"], p["growth"]
    # thin-stream normalisation: in polar coordinates about the galaxy the flux is int f(t) int exp(..) rho drho dt
    # ~ sqrt(2 pi) w int r(t) f(t) dt, by the midpoint rule
    t = (torch.arange(_TAIL_QUAD, dtype=length.dtype, device=length.device) + 0.5) / _TAIL_QUAD
    tt = t[None, :] * length[:, None]
    r = p["radius_arcsec"][:, None] * torch.exp(k_growth[:, None] * tt)
    line = (r * _tail_weight(tt, length[:, None], tau[:, None])).mean(dim=1) * length
    amp = 1.0 / (math.sqrt(2.0 * math.pi) * p["width_arcsec"] * line)
    return {"cx": p.get("x_arcsec", zero), "cy": p.get("y_arcsec", zero), "r0": p["radius_arcsec"],
            "inv_2w2": 0.5 / p["width_arcsec"] ** 2, "amp": amp, "theta0": p["start_rad"], "dir": p["direction"],
            "length": length, "tau": tau, "k": k_growth, "inv_k": 1.0 / k_growth}


def _tail_at(x: torch.Tensor, y: torch.Tensor, k: Params) -> torch.Tensor:
    dx, dy = x - k["cx"], y - k["cy"]
    rho = torch.sqrt(dx * dx + dy * dy).clamp_min(1e-6)
    ang = torch.atan2(dy, dx)
    # the path angle t of the point: t = d (angle - theta0) mod 2 pi
    t = torch.remainder(k["dir"] * (ang - k["theta0"]), 2.0 * math.pi)
    r_path = k["r0"] * torch.exp(k["k"] * t)
    d = rho - r_path
    return k["amp"] * torch.exp(-d * d * k["inv_2w2"]) * _tail_weight(t, k["length"], k["tau"])


# Parameters: radius_arcsec (R0, start radius about the galaxy at x_arcsec, y_arcsec), growth (k > 0),
# width_arcsec, start_rad, direction (+1 anticlockwise, -1 clockwise), length_rad (T < 2 pi), fade_rad (tau).
tidal_tail = Profile("tidal_tail", _tail_constants, _tail_at)

PROFILES = {p.name: p for p in (ring, spiral_arms, tidal_tail)}
