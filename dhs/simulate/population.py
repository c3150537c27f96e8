"""The simulated survey's population: sky regions, bricks, observing conditions, hosts, labels
and injection parameters. Pure numpy, seeded; no pixels here.

Layout: ``n_regions`` connected groups of DR10-sized bricks (0.25 deg). Conditions (PSF, depth,
E(B-V)) are per brick, as in the bricks table; hosts sit at random positions inside bricks.
Splits are assigned per region from a salted hash, ordered and cut at the target fractions so
that no region (and so no brick or host) is in two splits, and every split is non-empty.

Labels are drawn independently of everything else, so injections and controls share the host
and conditions distributions (docs/conventions.md, "Shortcuts"); in ``paired`` mode each host yields one control and
one injection with the same noise realisation.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pandas as pd

from dhs import PIPELINE_VERSION
from dhs.simulate import physical
from dhs.simulate.config import SimConfig
from dhs.simulate.priors import sample_prior

BRICK_SIZE_DEG = 0.25
AB_ZP_NMGY = 22.5


def mag_to_nmgy(mag: np.ndarray) -> np.ndarray:
    return 10.0 ** (-0.4 * (np.asarray(mag, float) - AB_ZP_NMGY))


def dr10_brickname(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    """DR10-style brick names 'RRRRpDDD' / 'RRRRmDDD' (RA and |Dec| in units of 0.1 deg)."""
    ra10 = np.floor(np.asarray(ra_deg) * 10).astype(int) % 3600
    dec10 = np.floor(np.abs(np.asarray(dec_deg)) * 10).astype(int)
    sign = np.where(np.asarray(dec_deg) >= 0, "p", "m")
    return np.array([f"{r:04d}{s}{d:03d}" for r, s, d in zip(ra10, sign, dec10)])


def assign_region_splits(region_ids: np.ndarray, fractions: dict[str, float], salt: str) -> dict[int, str]:
    """Region -> split by a salted hash order cut at the target fractions (each split >= 1 region)."""
    ids = sorted(int(r) for r in region_ids)
    key = {r: hashlib.sha256(f"{salt}:{r}".encode()).hexdigest() for r in ids}
    order = sorted(ids, key=key.__getitem__)
    n = len(order)
    n_val = max(1, int(round(fractions["val"] * n)))
    n_test = max(1, int(round(fractions["test"] * n)))
    n_train = n - n_val - n_test
    if n_train < 1:
        raise ValueError(f"{n} regions cannot fill train/val/test; raise n_regions")
    out = {}
    for i, r in enumerate(order):
        out[r] = "train" if i < n_train else ("val" if i < n_train + n_val else "test")
    return out


def config_id(cfg: SimConfig) -> str:
    fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    return hashlib.sha256(repr(sorted(fields.items())).encode()).hexdigest()[:12]


HOST_COLUMNS = ("host_r_mag", "host_g_minus_r", "host_r_minus_z", "host_reff_arcsec", "host_sersic_n", "host_q", "host_phi_rad")
SYSTEM_COLUMNS = ("theta_e_arcsec", "lens_q", "lens_phi_rad", "shear_g1", "shear_g2", "src_x_arcsec", "src_y_arcsec",
                  "src_r_mag", "src_g_minus_r", "src_r_minus_z", "src_reff_arcsec", "src_sersic_n", "src_e", "src_phi_rad",
                  "src_knot_g_minus_r", "src_knot_r_minus_z")
# the physical population's redshifts and velocity dispersion: host ones on every row, source ones on injections
PHYSICAL_HOST_EXTRAS = ("z_l", "sigma_v_kms")
PHYSICAL_SOURCE_EXTRAS = ("z_s",)


def uniform_systems(cfg: SimConfig, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """n hosts, each with the lens system an injection into it would get, from the priors in
    ``simulate.priors`` (uniform boxes and simple distributions, for grid studies)."""
    P = cfg.priors
    d = {k: sample_prior(P[k], n, rng) for k in ("host_r_mag", "host_g_minus_r", "host_r_minus_z", "host_reff_arcsec", "host_sersic_n")}
    d["host_q"] = np.clip(sample_prior(P["host_q"], n, rng), 0.05, 1.0)
    d["host_phi_rad"] = rng.uniform(0, np.pi, n)
    theta_e = sample_prior(P["theta_e_arcsec"], n, rng)
    d["theta_e_arcsec"] = theta_e
    d["lens_q"] = np.clip(sample_prior(P["lens_q"], n, rng), 0.05, 1.0)
    d["lens_phi_rad"] = rng.uniform(0, np.pi, n)
    d["shear_g1"] = sample_prior(P["shear_component"], n, rng)
    d["shear_g2"] = sample_prior(P["shear_component"], n, rng)
    beta = sample_prior(P["src_beta_frac"], n, rng) * theta_e
    ang = rng.uniform(0, 2 * np.pi, n)
    d["src_x_arcsec"], d["src_y_arcsec"] = beta * np.cos(ang), beta * np.sin(ang)
    for k in ("src_r_mag", "src_g_minus_r", "src_r_minus_z", "src_reff_arcsec", "src_sersic_n"):
        d[k] = sample_prior(P[k], n, rng)
    d["src_e"] = np.clip(sample_prior(P["src_e"], n, rng), 0.0, 0.9)
    d["src_phi_rad"] = rng.uniform(0, np.pi, n)
    kc = cfg.knot_config
    d["src_knot_g_minus_r"] = d["src_g_minus_r"] - (kc.bluer_g_minus_r if kc else 0.0)
    d["src_knot_r_minus_z"] = d["src_r_minus_z"] - (kc.bluer_r_minus_z if kc else 0.0)
    return pd.DataFrame(d)


def physical_systems(cfg: SimConfig, n: int, rng: np.random.Generator, params: dict | None = None) -> pd.DataFrame:
    """n hosts with their lens systems from the physical population (``dhs.simulate.physical``):
    controls keep the host, injections the whole system, so both share one host distribution."""
    s = physical.sample(n, rng, cfg.physical_params if params is None else params)
    out = {k: s[k].to_numpy() for k in HOST_COLUMNS + PHYSICAL_HOST_EXTRAS + PHYSICAL_SOURCE_EXTRAS}
    for k in SYSTEM_COLUMNS:
        out[k] = s["lens_phi_abs_rad" if k == "lens_phi_rad" else k].to_numpy()
    return pd.DataFrame(out)


def fill_injection_columns(df: pd.DataFrame, row_sys: pd.DataFrame, inj: np.ndarray, cfg: SimConfig,
                           rng: np.random.Generator) -> None:
    """The lens and source columns of ``df`` (one row per stamp) from each row's system
    ``row_sys``; controls carry 0 in every injection column, as in Phase 4c. Needs
    ``df['host_r_mag']`` (for src_dmag)."""
    n = len(df)

    def inj_only(values) -> np.ndarray:
        return np.where(inj, np.asarray(values, float), 0.0)

    is_sis = inj & (rng.uniform(0, 1, n) < cfg.sis_fraction)
    lens_q = np.where(is_sis, 1.0, row_sys["lens_q"].to_numpy())
    lens_q = np.where(inj, lens_q, 1.0)
    df["lens_model"] = np.where(~inj, "CONTROL", np.where(is_sis, "SIS", "SIE"))
    for k in SYSTEM_COLUMNS:
        df[k] = inj_only(row_sys[k])
    df["lens_q"] = lens_q
    df["lens_e"] = inj_only((1 - lens_q) / (1 + lens_q))
    df["shear"] = np.hypot(df["shear_g1"], df["shear_g2"])
    # src_dmag: source total (unlensed) r mag minus host total r mag
    df["src_dmag"] = inj_only(row_sys["src_r_mag"].to_numpy() - df["host_r_mag"].to_numpy())
    if cfg.population == "physical":
        for k in PHYSICAL_SOURCE_EXTRAS:
            df[k] = inj_only(row_sys[k])


def fill_bookkeeping(df: pd.DataFrame, cfg: SimConfig, selection: str) -> None:
    """Identity columns of the contract: experiment, selection, versions, stamp format."""
    cid = config_id(cfg)
    df["experiment_id"] = f"{'sim' if selection == 'synthetic' else selection}-{cid}"
    df["selection_set_id"] = selection
    df["ranking_mode"] = selection
    df["selection_strategy"] = selection
    df["pipeline_version"] = PIPELINE_VERSION
    df["config_id"] = cid
    df["stamp_size"] = np.int64(cfg.stamp_size)
    df["bandset"] = "grz"
    df["ab_zp_nmgy"] = AB_ZP_NMGY


def sample_population(cfg: SimConfig) -> pd.DataFrame:
    """One row per stamp with every contract column except the pixels and the rendered metrics."""
    rng = np.random.default_rng([cfg.seed, 0])
    P = cfg.priors

    # --- sky layout: regions of bricks, conditions per brick
    region_ids = np.arange(cfg.n_regions)
    # uniform on the sphere within the DR10 South dec band
    sin_lo, sin_hi = np.sin(np.radians(cfg.dec_min_deg)), np.sin(np.radians(cfg.dec_max_deg - 1.0))
    reg_dec = np.degrees(np.arcsin(rng.uniform(sin_lo, sin_hi, cfg.n_regions)))
    reg_ra = rng.uniform(0, 360, cfg.n_regions)
    n_bricks = rng.integers(cfg.bricks_per_region[0], cfg.bricks_per_region[1] + 1, cfg.n_regions)
    b_region = np.repeat(region_ids, n_bricks)
    # bricks form a connected strip inside the region
    b_local = np.concatenate([np.arange(k) for k in n_bricks])
    b_dec = reg_dec[b_region] + BRICK_SIZE_DEG * (b_local // 4)
    b_ra = (reg_ra[b_region] + BRICK_SIZE_DEG * (b_local % 4) / np.cos(np.radians(b_dec))) % 360
    nb = b_region.size
    b_psf_r = sample_prior(P["psfsize_r_arcsec"], nb, rng)
    b_depth_r = sample_prior(P["psfdepth_r_mag"], nb, rng)
    b_ebv = sample_prior(P["ebv"], nb, rng)
    split_of = assign_region_splits(region_ids, dict(cfg.split_fractions), cfg.split_salt)

    # --- hosts, each with the lens system an injection into it gets (label-independent)
    n_rows = cfg.n_stamps
    n_hosts = (n_rows + 1) // 2 if cfg.paired else n_rows
    h_brick = rng.integers(0, nb, n_hosts)
    h_dec = b_dec[h_brick] + rng.uniform(-0.5, 0.5, n_hosts) * BRICK_SIZE_DEG
    h_ra = (b_ra[h_brick] + rng.uniform(-0.5, 0.5, n_hosts) * BRICK_SIZE_DEG / np.cos(np.radians(h_dec))) % 360
    if cfg.population == "physical":
        systems = physical_systems(cfg, n_hosts, rng)
        if cfg.physical_train:
            # the train split's hosts get systems drawn with the training overrides (a finder learns
            # from lenses it can see); val and test keep the physical population
            in_train = np.array([split_of[int(r)] == "train" for r in b_region[h_brick]])
            if in_train.any():
                trained = physical_systems(cfg, int(in_train.sum()), rng, cfg.physical_train_params)
                systems.iloc[np.flatnonzero(in_train)] = trained[systems.columns].to_numpy()
    else:
        systems = uniform_systems(cfg, n_hosts, rng)
    systems["bad_pixel_frac"] = np.clip(sample_prior(P["bad_pixel_frac"], n_hosts, rng), 0, 1)
    systems["wise_brightmask_frac"] = np.clip(sample_prior(P["wise_brightmask_frac"], n_hosts, rng), 0, 1)

    # --- rows: hosts -> stamps with labels. Hosts are ordered by brick (as survey cutouts are),
    # so a render batch meets few distinct PSFs; labels stay independent of everything.
    order = np.argsort(h_brick, kind="stable")
    h_brick, h_ra, h_dec = h_brick[order], h_ra[order], h_dec[order]
    systems = systems.iloc[order].reset_index(drop=True)
    if cfg.paired:
        row_host = np.repeat(np.arange(n_hosts), 2)[:n_rows]
        is_control = np.tile([1, 0], n_hosts)[:n_rows]
    else:
        row_host = np.arange(n_rows)
        is_control = (rng.uniform(0, 1, n_rows) < cfg.control_fraction).astype(np.int64)
    inj = is_control == 0
    n = n_rows
    brick = h_brick[row_host]
    df = pd.DataFrame(
        {
            "task_id": [f"sim{cfg.seed}-{i:08d}" for i in range(n)],
            "host_id": row_host.astype(np.int64),
            "noise_seed": row_host.astype(np.int64),
            "region_id": b_region[brick].astype(np.int64),
            "brickname": dr10_brickname(b_ra[brick], b_dec[brick]),
            "ra": h_ra[row_host],
            "dec": h_dec[row_host],
            "is_control": is_control.astype(np.int64),
        }
    )
    df["region_split"] = df["region_id"].map(split_of)
    row_sys = systems.iloc[row_host].reset_index(drop=True)
    for k in HOST_COLUMNS + ("bad_pixel_frac", "wise_brightmask_frac"):
        df[k] = row_sys[k].to_numpy()
    if cfg.population == "physical":
        for k in PHYSICAL_HOST_EXTRAS:
            df[k] = row_sys[k].to_numpy()

    psf_r = b_psf_r[brick]
    df["psfsize_r"] = psf_r
    for b in cfg.bands:
        df[f"psf_fwhm_used_{b}"] = psf_r * cfg.psf_fwhm_ratio[b]
        df[f"psfdepth_{b}"] = b_depth_r[brick] + cfg.depth_offset_mag[b]
    df["ebv"] = b_ebv[brick]

    fill_injection_columns(df, row_sys, inj, cfg, rng)

    failed = rng.uniform(0, 1, n) < cfg.failed_cutout_fraction
    df["cutout_ok"] = (~failed).astype(np.int64)

    fill_bookkeeping(df, cfg, "synthetic")
    return df
