"""Star-forming knots of lensed sources: a clumpy component beside the smooth Sersic.

Real high-redshift sources are irregular and clumpy; a finder trained on smooth Sersic arcs
learns a morphology the sky does not show. Each source is given, in the spirit of GalSim's
``RandomKnots``, a set of compact star-forming knots scattered over the galaxy:

- number of knots: uniform integer in ``n_knots`` (at most ``MAX_KNOTS``);
- positions: a 2-D Gaussian with the source's half-light radius (r_half = 1.1774 sigma for a
  circular Gaussian), stretched by the source's axis ratio and position angle, so the knots
  follow the galaxy;
- sizes: circular Gaussians with sigma uniform in ``sigma_arcsec`` (star-forming clumps are
  < 1 kpc, ~0.03-0.1 arcsec at z ~ 1-3); the renderer raises the sub-pixel count for the narrowest
  knots (``dhs.simulate.render.oversample_for``) so their flux is sampled to ~1e-3;
- fluxes: the knots carry a fraction ``flux_fraction`` of the source's r flux, split between
  them by exponential weights (a steep clump luminosity function: one or two knots dominate);
- colour: bluer than the smooth component (young star-forming regions have bluer UV continua
  than their host: clumps at z ~ 1-3 are ~0.2-0.5 mag bluer in rest U-V, Guo et al. 2012;
  Wuyts et al. 2012); the physical population gives each source's knot colours from its SED
  with a steeper UV slope, the uniform one subtracts ``bluer_g_minus_r`` / ``bluer_r_minus_z``.
  Clumps appear in about half of the star-forming galaxies at z ~ 1-3 and carry a few to ~20 %
  of the UV light each (Guo et al. 2015).

The knots are rendered through the same lens (``dhs.simulate.render.lensed_knots``), normalised
to their total flux in the source plane: the lensed image keeps the magnification.
Parameters come from the stamp's keyed uniforms, so paired stamps and reruns agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

MAX_KNOTS = 10
GAUSS_HALF_LIGHT_PER_SIGMA = 1.1774100225154747  # sqrt(2 ln 2)
N_UNIFORMS = 3 + 4 * MAX_KNOTS


@dataclass(frozen=True)
class KnotConfig:
    """``simulate.knots`` as the schema checked it (dhs.params.schema holds each default)."""

    fraction_of_sources: float                # sources that have knots at all
    flux_fraction: tuple[float, float]        # of the source's r flux, uniform
    n_knots: tuple[int, int]                  # uniform integer, inclusive
    sigma_arcsec: tuple[float, float]         # knot Gaussian sigma, uniform
    bluer_g_minus_r: float                    # uniform population only (physical: the SED model's knot colours)
    bluer_r_minus_z: float

    @classmethod
    def from_params(cls, p: Mapping | None) -> "KnotConfig | None":
        """From the checked ``simulate.knots`` (None: no knots), its ranges as tuples."""
        if p is None:
            return None
        return cls(**{k: tuple(v) if k in ("flux_fraction", "sigma_arcsec", "n_knots") else v for k, v in p.items()})


def sample_knots(u: np.ndarray, src_reff_arcsec: np.ndarray, src_q: np.ndarray, src_phi_rad: np.ndarray,
                 cfg: KnotConfig) -> dict[str, np.ndarray]:
    """Knot parameters of each source from its uniforms ``u`` (B, N_UNIFORMS).

    Returns ``flux_fraction`` (B,) (0 for sources without knots) and, per knot slot i,
    ``knot{i}_x_arcsec``, ``knot{i}_y_arcsec`` (from the source centre), ``knot{i}_sigma_arcsec``
    and ``knot{i}_weight`` (weights of a source sum to 1; empty slots have weight 0)."""
    B = len(src_reff_arcsec)
    has = u[:, 0] < cfg.fraction_of_sources
    frac = np.where(has, cfg.flux_fraction[0] + (cfg.flux_fraction[1] - cfg.flux_fraction[0]) * u[:, 1], 0.0)
    lo, hi = cfg.n_knots
    n = np.minimum(lo + np.floor(u[:, 2] * (hi - lo + 1)).astype(int), MAX_KNOTS)
    slot = np.arange(MAX_KNOTS)[None, :]
    present = (slot < n[:, None]) & has[:, None]
    uk = u[:, 3:].reshape(B, MAX_KNOTS, 4)
    # Box-Muller from two uniforms per knot: a Gaussian position with the source's half-light radius
    rad = np.sqrt(-2.0 * np.log(uk[..., 0]))
    ang = 2.0 * np.pi * uk[..., 1]
    sigma_pos = (src_reff_arcsec / GAUSS_HALF_LIGHT_PER_SIGMA)[:, None]
    # elliptical like the source: circularised radius kept (x' scaled by 1/sqrt(q), y' by sqrt(q))
    xp = rad * np.cos(ang) * sigma_pos / np.sqrt(src_q)[:, None]
    yp = rad * np.sin(ang) * sigma_pos * np.sqrt(src_q)[:, None]
    c, s = np.cos(src_phi_rad)[:, None], np.sin(src_phi_rad)[:, None]
    x, y = c * xp - s * yp, s * xp + c * yp
    sig = cfg.sigma_arcsec[0] + (cfg.sigma_arcsec[1] - cfg.sigma_arcsec[0]) * uk[..., 2]
    w = np.where(present, -np.log(uk[..., 3]), 0.0)
    total = w.sum(axis=1, keepdims=True)
    w = np.divide(w, total, out=np.zeros_like(w), where=total > 0)
    out = {"flux_fraction": frac}
    for i in range(MAX_KNOTS):
        out[f"knot{i}_x_arcsec"] = x[:, i]
        out[f"knot{i}_y_arcsec"] = y[:, i]
        out[f"knot{i}_sigma_arcsec"] = sig[:, i]
        out[f"knot{i}_weight"] = w[:, i]
    return out

