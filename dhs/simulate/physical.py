"""A physically anchored galaxy-galaxy lens population for injection-recovery on DR10 South.

Pure numpy/scipy, vectorised, deterministic given the numpy Generator, no file I/O. The model,
every formula and every default with its literature source are in docs/population.md.

Generative model (one row = one lens system = one host + one source behind it):

  p(sigma, z_l, r_s, z_s, ...) ~ phi(sigma) dV/dz_l  x  S_host  x  dN/dr_s p(z_s | r_s)  x  W

  phi       Choi, Park & Vogeley (2007) early-type velocity-dispersion function, no evolution
  dV/dz     comoving volume, flat LCDM (H0 70, Om 0.3)
  S_host    DR10 LRG-like host selection (z-band mag <= 20; design choice)
  dN/dr     source counts, log10 dN/dm = 4.645 + 0.328 (r-24) - 0.0173 (r-24)^2 /deg^2/mag, and
  p(z|r)    ~ z^a exp(-(z/z0)^1.389), a = 1.110 + 0.084 (r-24), ln z0 = -0.141 + 0.134 (r-24)
            - 0.0137 (r-24)^2: fits to the LSST CatSim catalogue LensPop (Collett 2015) draws its
            sources from; r in [20, 27] (the faint limit is a design choice, docs/population.md)
  W         'cross_section': pi theta_E^2 ~ sigma^4 (D_ls/D_s)^2 [z_s > z_l] (real lenses: a
            source lies inside the multiple-imaging region); 'volume': [z_s > z_l] only (hosts
            ~ dV/dz x VDF, up to the small factor P(z_s > z_l))
  Host:     R_e from Hyde & Bernardi (2009) <log R_e|log sigma> (0.11 dex); M_r from the
            Hyde & Bernardi (2009) r-band Fundamental Plane given (sigma, R_e); passive
            evolution of a z_f = 3 burst; K-corrections/colours of the CWW-E (Benitez 2004)
            elliptical through DECam g, r, z; n = 4; q = 1 - Rayleigh(0.378 - 5.72e-4 sigma)
  Lens:     theta_E = 4 pi (sigma/c)^2 D_ls/D_s (SIS; used as the circularised SIE theta_E of
            lenstronomy and of LensPop's pylens); q_mass = q_light N(1, 0.11), PA offset
            N(0, 10 deg) (Koopmans et al. 2006); shear g1, g2 ~ N(0, 0.05)
  Source:   position uniform in area inside theta_E; r_e = 6.9 kpc (1+z)^-1.2 (L_UV/L*)^0.27,
            lognormal 0.5 (Shibuya et al. 2015); Sersic n lognormal (median 1.2, 0.15 dex);
            q = 1 - Rayleigh(0.3); SED f_lambda ~ lambda^beta (beta ~ N(-1.6, 0.4), Bouwens et
            al. 2014), slope beta + 1 above 4000 A (rest g-r ~ 0.4), Balmer break ~1.35, Madau
            (1995) IGM, zero below 912 A; through approximate DECam g, r, z

Sampling is exact up to grid interpolation, with no rejection on the lensing weight: in
comoving distance chi (flat), dV ~ chi_l^2 dchi_l and D_ls/D_s = 1 - chi_l/chi_s, so given the
source, x = chi_l/chi_s follows Beta(3, 3) (cross-section) or Beta(3, 1) (volume), truncated to
the z_l range; the source's own weight is chi_s^3 times that truncated mass. The only rejection
is the host magnitude cut.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import gammaln

from dhs.params.physical import DEFAULT_PARAMS, make_params  # noqa: F401  (DEFAULT_PARAMS: the knobs)
from dhs.simulate.cosmology import ARCSEC_PER_RAD, C_KMS, cosmology
from dhs.simulate.interp import draw, quantile_table, uinterp
from dhs.simulate.photometry import host_kcorr, sf_band_fnu, sf_colours

_CANDIDATE_BATCH = 400_000  # candidates per pass through the host cut

# --------------------------------------------------------------------------------------------
# Host galaxy observables from (sigma, z_l)
def _truncated_rayleigh(rng, scale, e_max, size):
    """e ~ Rayleigh(scale) truncated to e < e_max, by inverse CDF."""
    fmax = -np.expm1(-0.5 * (e_max / scale) ** 2)
    u = rng.uniform(0.0, 1.0, size) * fmax
    return scale * np.sqrt(-2.0 * np.log1p(-u))


def host_observables(sigma, z_l, rng, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    p, cosmo = params, cosmology(params)
    n = np.size(sigma)
    V = np.log10(sigma)
    c0, c1, c2 = p["host_logre_coeffs"]
    log_re = c0 + c1 * V + c2 * V * V + rng.normal(0.0, p["host_logre_scatter_dex"], n)
    if p["host_luminosity_relation"] == "fp":
        # log R = a V + b <mu>_e + c -> <mu>_e; L/2 inside pi R_e^2: M = <mu>_e - 5 log10 R_kpc - 38.568
        mu_e = (log_re - p["fp_a"] * V - p["fp_c"]) / p["fp_b"] + rng.normal(0.0, p["fp_scatter_dex"] / p["fp_b"], n)
        m_abs = mu_e - 5.0 * log_re - 38.568
    elif p["host_luminosity_relation"] == "lenspop":
        # LensPop: root of <log10 sigma | M_r> = -2.97 - 0.37 M_r - 0.006 M_r^2 (Hyde & Bernardi 2009a)
        disc = np.clip(0.37**2 - 4 * 0.006 * (2.97 + V), 0.0, None)
        m_abs = (-0.37 + np.sqrt(disc)) / (2 * 0.006) + rng.normal(0.0, p["lenspop_mr_scatter_mag"], n)
    else:
        raise ValueError(f"unknown host_luminosity_relation {p['host_luminosity_relation']!r}")
    if p["evo_kappa"]:
        t_f = cosmo.age_gyr(p["evo_zform"])
        age_ratio = np.maximum(cosmo.age_gyr(z_l) - t_f, 1e-3) / (cosmo.age_gyr(0.0) - t_f)
        m_abs = m_abs + 2.5 * p["evo_kappa"] * np.log10(age_ratio)
    kr = host_kcorr("r", z_l)
    r_mag = m_abs + cosmo.distance_modulus(z_l) + kr
    gr = host_kcorr("g", z_l) - kr + rng.normal(0.0, p["host_gr_scatter"], n)
    rz = kr - host_kcorr("z", z_l) + rng.normal(0.0, p["host_rz_scatter"], n)
    reff = 10.0**log_re / (cosmo.angular_diameter(z_l) * 1e3) * ARCSEC_PER_RAD
    a, b = p["host_q_rayleigh"]
    q = 1.0 - _truncated_rayleigh(rng, np.clip(a + b * np.asarray(sigma), 0.02, None), 1.0 - p["host_q_min"], n)
    return {"host_M_r": m_abs, "host_r_mag": r_mag, "host_g_minus_r": gr, "host_r_minus_z": rz,
            "host_reff_kpc": 10.0**log_re, "host_reff_arcsec": reff, "host_q": q}


def _host_band_mag(h: Mapping[str, np.ndarray], band: str) -> np.ndarray:
    if band == "r":
        return h["host_r_mag"]
    if band == "g":
        return h["host_r_mag"] + h["host_g_minus_r"]
    if band == "z":
        return h["host_r_mag"] - h["host_r_minus_z"]
    raise ValueError(f"host_mag_band must be g, r or z, got {band!r}")


# --------------------------------------------------------------------------------------------
# Tables for the exact draws (cached per parameter set).
def _beta_cdf(x, k: int):
    """Regularised CDF of Beta(3, 1 + k): k = 2 (x^2 (1-x)^2) or k = 0 (x^2)."""
    x = np.clip(x, 0.0, 1.0)
    return x**3 * (10.0 - 15.0 * x + 6.0 * x * x) if k == 2 else x**3


class _Tables:
    def __init__(self, p: Mapping[str, Any]):
        cosmo = cosmology(p)
        k = {"cross_section": 2, "volume": 0}.get(p["weighting"])
        if k is None:
            raise ValueError(f"weighting must be 'cross_section' or 'volume', got {p['weighting']!r}")
        self.k = k
        # sigma: phi(sigma) ~ x^alpha exp(-x^beta) / sigma (Choi et al. 2007), x sigma^4 for cross-section
        s = np.linspace(p["sigma_min"], p["sigma_max"], 20001)
        xs = s / p["vdf_sigma_star"]
        pdf = xs ** p["vdf_alpha"] * np.exp(-(xs ** p["vdf_beta"])) / s * (s**4 if k == 2 else 1.0)
        self.q_sigma = quantile_table(s, pdf)
        # x = chi_l/chi_s ~ Beta(3, 1 + k) truncated: inverse CDF tabulated in v = u^(1/3)
        xg = np.linspace(0.0, 1.0, 20001)
        self.beta_v_max = 1.0
        v = np.cbrt(_beta_cdf(xg, k))
        keep = np.concatenate([[True], np.diff(v) > 0])
        self.x_of_v = np.interp(np.linspace(0.0, 1.0, 20001), v[keep], xg[keep])
        self.chi_lo, self.chi_hi = float(cosmo.comoving(p["zl_min"])), float(cosmo.comoving(p["zl_max"]))
        # sources: joint weight on (r, z_s): counts(r) p(z_s|r) chi_s^3 [I(x_hi) - I(x_lo)]
        c0, c1, c2 = p["src_counts_coeffs"]
        (a0, a1), b = p["src_z_alpha"], p["src_z_beta"]
        l0, l1, l2 = p["src_z_logz0"]
        mg = np.linspace(p["src_mag_min"], p["src_mag_max"], 401)
        zg = np.linspace(0.0, p["src_z_max"], 2401)[1:]
        dm = (mg - 24.0)[:, None]
        z0 = np.exp(l0 + l1 * dm + l2 * dm * dm)
        a = a0 + a1 * dm
        log_pz = math.log(b) + a * np.log(zg)[None, :] - (zg[None, :] / z0) ** b - (a + 1) * np.log(z0) - gammaln((a + 1) / b)
        chi_s = cosmo.comoving(zg)
        x_lo, x_hi = self.chi_lo / chi_s, np.minimum(1.0, self.chi_hi / chi_s)
        lens_w = chi_s**3 * np.clip(_beta_cdf(x_hi, k) - _beta_cdf(x_lo, k), 0.0, None)
        joint = np.exp(log_pz) * lens_w[None, :]                       # (nm, nz), per unit z
        w_m = joint.sum(axis=1) * (zg[1] - zg[0])
        counts = 10.0 ** (c0 + c1 * (mg - 24.0) + c2 * (mg - 24.0) ** 2)
        self.q_mag = quantile_table(mg, counts * w_m)
        self.m0, self.dm = mg[0], mg[1] - mg[0]
        self.q_zs = np.stack([quantile_table(zg, row, 1025) for row in joint])   # (nm, nu)
        # fraction of all (unweighted) sources in [mag range] that could be lensed at all, for reference
        self.lens_weight_vs_z = (zg, lens_w)

    def draw_sources(self, rng, n):
        r = draw(self.q_mag, rng.uniform(0.0, 1.0, n))
        u = rng.uniform(0.0, 1.0, n)
        ti = (r - self.m0) / self.dm
        i = np.clip(np.floor(ti), 0, self.q_zs.shape[0] - 2).astype(np.intp)
        fi = np.clip(ti - i, 0.0, 1.0)
        tu = u * (self.q_zs.shape[1] - 1)
        j = np.clip(np.floor(tu), 0, self.q_zs.shape[1] - 2).astype(np.intp)
        fj = tu - j
        q = self.q_zs
        z = ((q[i, j] * (1 - fj) + q[i, j + 1] * fj) * (1 - fi)
             + (q[i + 1, j] * (1 - fj) + q[i + 1, j + 1] * fj) * fi)
        return r, z

    def draw_x(self, rng, chi_s):
        """x = chi_l/chi_s from the truncated Beta(3, 1+k)."""
        x_lo, x_hi = self.chi_lo / chi_s, np.minimum(1.0, self.chi_hi / chi_s)
        c_lo, c_hi = _beta_cdf(x_lo, self.k), _beta_cdf(x_hi, self.k)
        u = c_lo + rng.uniform(0.0, 1.0, chi_s.size) * (c_hi - c_lo)
        x = uinterp(np.cbrt(u), 0.0, 1.0 / (self.x_of_v.size - 1), self.x_of_v)
        return np.clip(x, x_lo, x_hi * (1.0 - 1e-6))


_TABLE_CACHE: dict[tuple, _Tables] = {}
_TABLE_KEYS = ("H0", "Om", "vdf_sigma_star", "vdf_alpha", "vdf_beta", "sigma_min", "sigma_max", "zl_min", "zl_max",
               "weighting", "src_mag_min", "src_mag_max", "src_counts_coeffs", "src_z_alpha",
               "src_z_beta", "src_z_logz0", "src_z_max")


def _tables(p: Mapping[str, Any]) -> _Tables:
    key = tuple(p[k] for k in _TABLE_KEYS)
    if key not in _TABLE_CACHE:
        _TABLE_CACHE[key] = _Tables(p)
    return _TABLE_CACHE[key]


def source_density_per_arcsec2(params: Mapping[str, Any] | None = None) -> float:
    """Unlensed source density (r in [src_mag_min, src_mag_max]) per arcsec^2."""
    p = make_params(params)
    m = np.linspace(p["src_mag_min"], p["src_mag_max"], 2001)
    c0, c1, c2 = p["src_counts_coeffs"]
    dn = 10.0 ** (c0 + c1 * (m - 24.0) + c2 * (m - 24.0) ** 2)
    return float(np.sum(0.5 * (dn[1:] + dn[:-1]) * np.diff(m)) / 3600.0**2)


# --------------------------------------------------------------------------------------------
def _draw_candidates(m: int, rng: np.random.Generator, p: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """m (source, deflector) pairs from the lensing-weighted joint, then the host cut."""
    cosmo, t = cosmology(p), _tables(p)
    src_r, z_s = t.draw_sources(rng, m)
    chi_s = cosmo.comoving(z_s)
    x = t.draw_x(rng, chi_s)
    z_l = cosmo.z_of_comoving(x * chi_s)
    sigma = draw(t.q_sigma, rng.uniform(0.0, 1.0, m))
    keep = np.ones(m, bool)
    nu = p["vdf_evolution_index"]
    if nu:
        e = (1.0 + z_l) ** nu
        keep &= rng.uniform(0.0, 1.0, m) * max((1 + p["zl_min"]) ** nu, (1 + p["zl_max"]) ** nu) < e
    host = host_observables(sigma, z_l, rng, p)
    if p["host_mag_max"] is not None:
        keep &= _host_band_mag(host, p["host_mag_band"]) <= p["host_mag_max"]
    cand = {"sigma_v_kms": sigma, "z_l": z_l, "z_s": z_s, "src_r_mag": src_r, "dls_ds": 1.0 - x, **host}
    return {k: v[keep] for k, v in cand.items()}


GAUSS_SIGMA_PER_REFF = 1.0 / 1.1774  # Gaussian-equivalent width of a half-light radius


def magnification_sis_extended(theta_e, beta, reff) -> np.ndarray:
    """Total magnification of an extended source by an SIS (estimate): the point-source value
    2 theta_E / beta (beta < theta_E) smoothed so that a source on the lens axis gives the ring
    value sqrt(2 pi) theta_E / s of a Gaussian of width s = reff/1.1774:
        mu ~ 2 theta_E / sqrt(beta^2 + (2 s / sqrt(2 pi))^2), at least 1.
    The renderer gives the exact value for the SIE + shear."""
    s = np.asarray(reff) * GAUSS_SIGMA_PER_REFF
    mu = 2.0 * np.asarray(theta_e) / np.sqrt(np.asarray(beta) ** 2 + (2.0 * s / math.sqrt(2 * math.pi)) ** 2)
    return np.maximum(mu, 1.0)


def sample(n: int, rng: np.random.Generator, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """n lens systems (one source each) from the population; see the module docstring.

    Positions in arcsec relative to the lens centre; angles in radians; lens_phi_rad is the mass
    position angle relative to the host's major axis (lens_phi_abs_rad: absolute, like
    host_phi_rad and src_phi_rad). Controls: the host columns of the same draw (sample_hosts).
    """
    p = make_params(params)
    cosmo = cosmology(p)
    parts, have, tries = [], 0, 0
    while have < n:
        # next batch sized from the acceptance so far (deterministic given rng)
        m = int(_CANDIDATE_BATCH) if have == 0 else int(min(max(1.2 * (n - have) * tries / have, 10_000), 4 * _CANDIDATE_BATCH))
        c = _draw_candidates(m, rng, p)
        parts.append(c)
        have += c["z_l"].size
        tries += m
        if have == 0 and tries > 20 * _CANDIDATE_BATCH:
            raise RuntimeError("no candidate passes the host cut; check params")
    cols = {k: np.concatenate([c[k] for c in parts])[:n] for k in parts[0]}
    sigma, z_l, z_s = cols["sigma_v_kms"], cols["z_l"], cols["z_s"]

    # --- lens mass
    sig_sie = p["sigma_sie_over_sigma_star"] * sigma
    theta_e = 4.0 * math.pi * (sig_sie / C_KMS) ** 2 * cols["dls_ds"] * ARCSEC_PER_RAD
    host_q = cols["host_q"]
    lens_q = np.clip(host_q * rng.normal(1.0, p["mass_q_ratio_sd"], n), p["mass_q_min"], 1.0)
    host_phi = rng.uniform(0.0, math.pi, n)
    lens_phi_rel = np.radians(rng.normal(0.0, p["mass_pa_offset_sd_deg"], n))
    g1 = rng.normal(0.0, p["shear_component_sd"], n)
    g2 = rng.normal(0.0, p["shear_component_sd"], n)

    # --- source position: uniform in area inside src_beta_max_frac * theta_E
    beta = p["src_beta_max_frac"] * theta_e * np.sqrt(rng.uniform(0.0, 1.0, n))
    ang = rng.uniform(0.0, 2 * math.pi, n)

    # --- source SED and colours
    lo, hi = p["src_uv_slope_range"]
    uv_slope = np.clip(rng.normal(p["src_uv_slope_mean"], p["src_uv_slope_sd"], n), lo, hi)
    blo, bhi = p["src_break_range"]
    brk = np.clip(p["src_break_median"] * 10.0 ** rng.normal(0.0, p["src_break_sd_dex"], n), blo, bhi)
    col = sf_colours(z_s, uv_slope, brk, p["src_igm"], p["src_opt_slope_offset"])
    src_r = cols["src_r_mag"]
    dm_s = cosmo.distance_modulus(z_s)
    m_uv = src_r - dm_s - col["k_uv"]                     # absolute AB magnitude at 1500 A

    # --- source size
    da_s_kpc = cosmo.angular_diameter(z_s) * 1e3
    if p["src_size_model"] == "shibuya2015":
        lum = 10.0 ** (-0.4 * (m_uv - p["src_size_muv_star"]))
        re_kpc = p["src_size_r0_kpc"] * (1.0 + z_s) ** p["src_size_z_index"] * lum ** p["src_size_lum_index"]
        re_kpc = re_kpc * np.exp(rng.normal(0.0, p["src_size_sigma_ln"], n))
    elif p["src_size_model"] == "lenspop":
        # LensPop: R/kpc = 10^(-(M + 18)/4) ((1+z)/1.6)^-1.2, 0.35 dex; M = rest-frame absolute r
        f_r0 = sf_band_fnu(np.zeros(n), uv_slope, brk, "r", "none", p["src_opt_slope_offset"])
        m_abs_r = src_r - dm_s + 2.5 * np.log10(1.0 + z_s) + 2.5 * np.log10(col["f_r"] / f_r0)
        re_kpc = 10.0 ** (-(m_abs_r + 18.0) / 4.0) * ((1.0 + z_s) / 1.6) ** -1.2
        re_kpc = re_kpc * 10.0 ** rng.normal(0.0, p["src_size_lenspop_scatter_dex"], n)
    else:
        raise ValueError(f"unknown src_size_model {p['src_size_model']!r}")
    src_reff = np.maximum(re_kpc / da_s_kpc * ARCSEC_PER_RAD, p["src_reff_min_arcsec"])
    nlo, nhi = p["src_sersic_range"]
    src_n = np.clip(p["src_sersic_median"] * 10.0 ** rng.normal(0.0, p["src_sersic_sd_dex"], n), nlo, nhi)
    src_q = 1.0 - _truncated_rayleigh(rng, p["src_q_rayleigh"], 1.0 - p["src_q_min"], n)
    src_phi = rng.uniform(0.0, math.pi, n)

    # knots: same SED model, steeper UV slope, no Balmer break (docs/population.md)
    kcol = sf_colours(z_s, np.clip(uv_slope + p["knot_delta_uv_slope"], -3.6, 0.0), np.full(n, p["knot_break"]),
                      p["src_igm"], p["knot_opt_slope_offset"])

    # --- analytic lensing estimates (the renderer gives the exact extended magnification)
    with np.errstate(divide="ignore", invalid="ignore"):
        mu_point = np.where(beta > 0, 2.0 * theta_e / beta, np.inf)
    mu_ext = magnification_sis_extended(theta_e, beta, src_reff)

    data = {
        "z_l": z_l, "sigma_v_kms": sigma,
        "host_r_mag": cols["host_r_mag"], "host_g_minus_r": cols["host_g_minus_r"],
        "host_r_minus_z": cols["host_r_minus_z"], "host_reff_arcsec": cols["host_reff_arcsec"],
        "host_sersic_n": np.full(n, float(p["host_sersic_n"])), "host_q": host_q, "host_phi_rad": host_phi,
        "host_M_r": cols["host_M_r"], "host_reff_kpc": cols["host_reff_kpc"],
        "theta_e_arcsec": theta_e, "lens_q": lens_q, "lens_phi_rad": lens_phi_rel,
        "lens_phi_abs_rad": np.mod(host_phi + lens_phi_rel, math.pi),
        "shear_g1": g1, "shear_g2": g2, "dls_ds": cols["dls_ds"],
        "z_s": z_s, "src_r_mag": src_r, "src_g_minus_r": col["g_minus_r"], "src_r_minus_z": col["r_minus_z"],
        "src_M_uv": m_uv, "src_uv_slope": uv_slope, "src_break": brk,
        "src_reff_arcsec": src_reff, "src_reff_kpc": re_kpc, "src_sersic_n": src_n,
        "src_q": src_q, "src_e": (1.0 - src_q) / (1.0 + src_q), "src_phi_rad": src_phi,
        "src_x_arcsec": beta * np.cos(ang), "src_y_arcsec": beta * np.sin(ang), "src_beta_arcsec": beta,
        "src_knot_g_minus_r": kcol["g_minus_r"], "src_knot_r_minus_z": kcol["r_minus_z"],
        "mu_point_sis": mu_point, "mu_ext_sis": mu_ext,
        "src_dmag": src_r - cols["host_r_mag"],
        "src_lensed_r_mag_est": src_r - 2.5 * np.log10(mu_ext),
        "host_z_mag": cols["host_r_mag"] - cols["host_r_minus_z"],
    }
    # one float64 block (a dict of columns would be consolidated by pandas at ~3x the cost)
    return pd.DataFrame(np.column_stack(list(data.values())), columns=list(data))


HOST_COLUMNS = ("z_l", "sigma_v_kms", "host_r_mag", "host_g_minus_r", "host_r_minus_z", "host_reff_arcsec",
                "host_sersic_n", "host_q", "host_phi_rad", "host_M_r", "host_reff_kpc", "host_z_mag")


def sample_hosts(n: int, rng: np.random.Generator, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Hosts for controls: exactly the host marginal of ``sample`` (same weighting and cuts)."""
    return sample(n, rng, params)[list(HOST_COLUMNS)]


