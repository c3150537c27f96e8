"""The knobs of the physical lens population (``dhs.simulate.physical`` samples it), each with its
literature default (sources in docs/population.md), and the like-for-like LensPop preset. Here,
apart from the sampler, because the schema checks ``simulate.physical`` against these keys
without loading the simulator."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# --------------------------------------------------------------------------------------------
# Parameters: every knob with its literature default (sources in docs/population.md); params.yaml
# (simulate.physical) overrides any of them.
DEFAULT_PARAMS: dict[str, Any] = {
    # cosmology: flat LCDM
    "H0": 70.0,
    "Om": 0.3,
    # --- deflectors: velocity dispersion function (Choi, Park & Vogeley 2007, ApJ 658, 884)
    "vdf_sigma_star": 161.0,     # km/s
    "vdf_alpha": 2.32,
    "vdf_beta": 2.67,
    "sigma_min": 100.0,          # km/s (LensPop's sigfloor)
    "sigma_max": 450.0,          # km/s
    "zl_min": 0.05,              # LensPop's preselection z > 0.05
    "zl_max": 2.0,               # LensPop's zlmax
    "vdf_evolution_index": 0.0,  # number density x (1+z)^index; 0 = no evolution (LensPop)
    "weighting": "cross_section",  # 'cross_section' (real lenses) | 'volume' (hosts alike)
    # --- host size: <log10 R_e/kpc | V = log10 sigma> = c0 + c1 V + c2 V^2 (Hyde & Bernardi 2009)
    "host_logre_coeffs": (2.46, -2.79, 0.84),
    "host_logre_scatter_dex": 0.11,
    # --- host luminosity: 'fp' = Hyde & Bernardi (2009b) r-band luminosity FP (orthogonal fit)
    #     log10 R_e/kpc = a log10 sigma + b <mu>_e + c, <mu>_e in r mag/arcsec^2 (rest, z ~ 0);
    #     'lenspop' = LensPop's inversion of <log sigma | M_r> (Hyde & Bernardi 2009a)
    "host_luminosity_relation": "fp",
    "fp_a": 1.4335,
    "fp_b": 0.3150,
    "fp_c": -8.8979,
    "fp_scatter_dex": 0.05,      # intrinsic FP thickness in log R_e
    "lenspop_mr_scatter_mag": 0.0625,  # LensPop's scatter (0.15/2.4), 'lenspop' relation only
    # passive evolution: M(z) = M(0) + 2.5 kappa log10(age(z)/age(0)), single burst at z_form
    "evo_kappa": 0.8,
    "evo_zform": 3.0,
    # observed-colour scatter about the template track (red-sequence scatter)
    "host_gr_scatter": 0.05,
    "host_rz_scatter": 0.05,
    # axis ratio q = 1 - e, e ~ Rayleigh(a + b sigma) truncated at q >= q_min (Collett 2015)
    "host_q_rayleigh": (0.378, -0.000572),
    "host_q_min": 0.2,
    "host_sersic_n": 4.0,
    # host selection (the search sample): band and limiting total AB magnitude (None = off)
    "host_mag_band": "z",
    "host_mag_max": 20.0,
    # --- lens mass
    "sigma_sie_over_sigma_star": 1.0,   # f_SIE (LensPop: 1; SLACS ~1.0 with ~7 % rms)
    "mass_q_ratio_sd": 0.11,            # q_mass = q_light N(1, sd) (Koopmans et al. 2006)
    "mass_q_min": 0.2,
    "mass_pa_offset_sd_deg": 10.0,      # PA_mass - PA_light ~ N(0, sd) (Koopmans et al. 2006)
    "shear_component_sd": 0.05,         # g1, g2 ~ N(0, sd)
    # --- sources: counts and redshifts (fit to LensPop's CatSim catalogue, 20 < r < 28)
    "src_mag_min": 20.0,
    "src_mag_max": 27.0,           # faint limit of the injected sources (design choice, docs/population.md)
    "src_counts_coeffs": (4.645, 0.3279, -0.01730),   # log10 dN/dm = c0 + c1 (r-24) + c2 (r-24)^2
    "src_z_alpha": (1.110, 0.0839),                    # a = a0 + a1 (r - 24)
    "src_z_beta": 1.389,
    "src_z_logz0": (-0.1407, 0.1338, -0.0137),         # ln z0 = l0 + l1 (r-24) + l2 (r-24)^2
    "src_z_max": 6.0,
    # position: uniform in area inside src_beta_max_frac * theta_E
    "src_beta_max_frac": 1.0,
    # size: 'shibuya2015' or 'lenspop'
    "src_size_model": "shibuya2015",
    "src_size_r0_kpc": 6.9,        # r_e(L*_z=3) (1+z)^index (Shibuya et al. 2015)
    "src_size_z_index": -1.2,
    "src_size_lum_index": 0.27,
    "src_size_muv_star": -21.0,    # M*_UV at z ~ 3 (Steidel et al. 1999; Reddy & Steidel 2009)
    "src_size_sigma_ln": 0.5,      # lognormal width (Shibuya et al. 2015: 0.45-0.75)
    "src_size_lenspop_scatter_dex": 0.35,
    "src_reff_min_arcsec": 0.01,
    # Sersic index: lognormal (median, dex), clipped
    "src_sersic_median": 1.2,
    "src_sersic_sd_dex": 0.15,
    "src_sersic_range": (0.5, 4.0),
    # ellipticity: q = 1 - Rayleigh(0.3), q >= 0.2 (Collett 2015)
    "src_q_rayleigh": 0.3,
    "src_q_min": 0.2,
    # SED: f_lambda ~ lambda^beta, Balmer break B (f_nu step across 3646-4000 A), Madau IGM
    "src_uv_slope_mean": -1.6,
    "src_uv_slope_sd": 0.4,
    "src_uv_slope_range": (-2.8, -0.5),
    "src_break_median": 1.35,
    "src_opt_slope_offset": 1.0,   # f_lambda slope above 4000 A = beta + offset: rest g-r ~ 0.4 (blue cloud)
    "src_break_sd_dex": 0.05,
    "src_break_range": (1.0, 1.8),
    "src_igm": "madau1995",        # 'madau1995' | 'none'
    # star-forming knots: same SED, steeper UV slope, no Balmer break (docs/population.md)
    "knot_delta_uv_slope": -0.5,
    "knot_break": 1.0,
    "knot_opt_slope_offset": 0.0,
}

# LensPop-like settings, for an apples-to-apples check against the LensPop table.
LENSPOP_PRESET: dict[str, Any] = {
    "src_mag_max": 28.0,                 # LensPop's CatSim source catalogue is complete to r ~ 28
    "host_luminosity_relation": "lenspop",
    "evo_kappa": 0.0,
    "host_mag_max": None,
    "src_size_model": "lenspop",
    "src_sersic_median": 1.0,
    "src_sersic_sd_dex": 0.0,
    "mass_q_ratio_sd": 0.0,
    "mass_pa_offset_sd_deg": 0.0,
    "shear_component_sd": 0.0,
}
PRESETS = {"default": {}, "lenspop": LENSPOP_PRESET}


def make_params(overrides: Mapping[str, Any] | None = None, preset: str = "default") -> dict[str, Any]:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: {sorted(PRESETS)}")
    p = {**DEFAULT_PARAMS, **PRESETS[preset]}
    if overrides:
        unknown = set(overrides) - set(p)
        if unknown:
            raise KeyError(f"unknown population params {sorted(unknown)}")
        p.update(overrides)
    return p


