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
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from dhs import PIPELINE_VERSION
from dhs.params import ParamsError
from dhs.simulate import physical
from dhs.simulate.config import SimConfig
from dhs.simulate.designs import lessons, measurement
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
        raise ParamsError(f"simulate.n_regions: {n} regions cannot fill train/val/test; raise simulate.n_regions")
    out = {}
    for i, r in enumerate(order):
        out[r] = "train" if i < n_train else ("val" if i < n_train + n_val else "test")
    return out


def _as_written(value: Any) -> Any:
    """A checked params value with its lists as lists (the config holds them as tuples), at any depth."""
    if isinstance(value, tuple):
        return [_as_written(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _as_written(v) for k, v in value.items()}
    return value


def config_id(cfg: SimConfig) -> str:
    """12 hex digits naming the survey: the SHA-256 of the repr of its sorted keys and checked
    values, lists as lists and the pair ``bricks_per_region`` as a tuple."""
    fields = {f.name: _as_written(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    fields["bricks_per_region"] = tuple(fields["bricks_per_region"])
    return hashlib.sha256(repr(sorted(fields.items())).encode()).hexdigest()[:12]


HOST_COLUMNS = ("host_r_mag", "host_g_minus_r", "host_r_minus_z", "host_reff_arcsec", "host_sersic_n", "host_q", "host_phi_rad")
SYSTEM_COLUMNS = ("theta_e_arcsec", "lens_q", "lens_phi_rad", "shear_g1", "shear_g2", "src_x_arcsec", "src_y_arcsec",
                  "src_r_mag", "src_g_minus_r", "src_r_minus_z", "src_reff_arcsec", "src_sersic_n", "src_e", "src_phi_rad",
                  "src_knot_g_minus_r", "src_knot_r_minus_z")
# the physical population's redshifts and velocity dispersion: host ones on every row, source ones on injections
PHYSICAL_HOST_EXTRAS = ("z_l", "sigma_v_kms")
PHYSICAL_SOURCE_EXTRAS = ("z_s",)


# The lens and source of a system from the priors (``simulate.priors``), a piece at a time: the
# uniform population (``uniform_systems``) and the gates' comparison arcs (``arcs_at_theta_e``)
# draw every parameter through these, each caller in its own order of pieces.
Priors = Mapping[str, Mapping[str, Any]]


def lens_mass_draws(P: Priors, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The SIE's axis ratio (clipped to [0.05, 1]) and position angle (uniform in [0, pi)) and the
    external shear's two components, in that order."""
    return {"lens_q": np.clip(sample_prior(P["lens_q"], n, rng), 0.05, 1.0), "lens_phi_rad": rng.uniform(0, np.pi, n),
            "shear_g1": sample_prior(P["shear_component"], n, rng), "shear_g2": sample_prior(P["shear_component"], n, rng)}


def source_position_draws(P: Priors, theta_e_arcsec, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The source's offset from the lens (arcsec): ``src_beta_frac`` x theta_E at a uniform angle."""
    beta = sample_prior(P["src_beta_frac"], n, rng) * theta_e_arcsec
    ang = rng.uniform(0, 2 * np.pi, n)
    return {"src_x_arcsec": beta * np.cos(ang), "src_y_arcsec": beta * np.sin(ang)}


def source_colour_draws(P: Priors, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The source's g - r and r - z."""
    return {k: sample_prior(P[k], n, rng) for k in ("src_g_minus_r", "src_r_minus_z")}


def source_profile_draws(P: Priors, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The source's half-light radius (arcsec) and Sersic index."""
    return {k: sample_prior(P[k], n, rng) for k in ("src_reff_arcsec", "src_sersic_n")}


def source_e_draw(P: Priors, n: int, rng: np.random.Generator) -> np.ndarray:
    """The source's ellipticity (1 - q) / (1 + q), clipped to [0, 0.9]."""
    return np.clip(sample_prior(P["src_e"], n, rng), 0.0, 0.9)


def arcs_at_theta_e(P: Priors, n: int, theta_e_arcsec: float, rng: np.random.Generator) -> pd.DataFrame:
    """n lens systems with a fixed theta_E, every other lens and source parameter from the priors
    as ``uniform_systems`` draws it (the columns of ``SYSTEM_COLUMNS`` but the knots' colours).
    The pieces come in their own order (source position, ellipticity, lens mass, profile,
    position angle, colours): the gates' ring probe compares its rings with these arcs."""
    position = source_position_draws(P, theta_e_arcsec, n, rng)
    src_e = source_e_draw(P, n, rng)
    lens = lens_mass_draws(P, n, rng)
    profile = source_profile_draws(P, n, rng)
    src_phi = rng.uniform(0, np.pi, n)
    colours = source_colour_draws(P, n, rng)
    return pd.DataFrame({"theta_e_arcsec": np.full(n, float(theta_e_arcsec)), **lens, **position, **profile, "src_e": src_e,
                         "src_phi_rad": src_phi, **colours})


def uniform_systems(cfg: SimConfig, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """n hosts, each with the lens system an injection into it would get, from the priors in
    ``simulate.priors`` (uniform boxes and simple distributions, for grid studies)."""
    P = cfg.priors
    d = {k: sample_prior(P[k], n, rng) for k in ("host_r_mag", "host_g_minus_r", "host_r_minus_z", "host_reff_arcsec", "host_sersic_n")}
    d["host_q"] = np.clip(sample_prior(P["host_q"], n, rng), 0.05, 1.0)
    d["host_phi_rad"] = rng.uniform(0, np.pi, n)
    theta_e = sample_prior(P["theta_e_arcsec"], n, rng)
    d["theta_e_arcsec"] = theta_e
    d.update(lens_mass_draws(P, n, rng))
    d.update(source_position_draws(P, theta_e, n, rng))
    d["src_r_mag"] = sample_prior(P["src_r_mag"], n, rng)
    d.update(source_colour_draws(P, n, rng))
    d.update(source_profile_draws(P, n, rng))
    d["src_e"] = source_e_draw(P, n, rng)
    d["src_phi_rad"] = rng.uniform(0, np.pi, n)
    kc = cfg.knot_config
    d["src_knot_g_minus_r"] = d["src_g_minus_r"] - (kc.bluer_g_minus_r if kc else 0.0)
    d["src_knot_r_minus_z"] = d["src_r_minus_z"] - (kc.bluer_r_minus_z if kc else 0.0)
    return pd.DataFrame(d)


def physical_systems(cfg: SimConfig, n: int, rng: np.random.Generator, params: dict | None = None) -> pd.DataFrame:
    """n hosts with their lens systems from the physical population (``dhs.simulate.physical``):
    controls keep the host, injections the whole system, so both share one host distribution."""
    return system_frame(physical.sample(n, rng, cfg.physical_params if params is None else params))


def system_frame(s: pd.DataFrame) -> pd.DataFrame:
    """The host and system columns of a draw of ``dhs.simulate.physical`` (its absolute mass
    position angle as ``lens_phi_rad``)."""
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


def host_systems(cfg: SimConfig, host_split: np.ndarray, host_control: np.ndarray,
                 rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    """(one system per host, the sky weight of each) from the population each host's split and
    label call for (``dhs.simulate.designs``): the train split's hosts get lessons
    (``simulate.lessons``; else the sky with ``physical_train``), the val and test injections the
    measurement population with its weights (``simulate.measurement``; else the sky, weight 1),
    and with ``control_hosts: parent`` the val and test controls hosts of the search sample
    (volume-weighted, the same host cut) instead of the hosts of lenses. The uniform population
    draws every host from its priors (weight 1)."""
    n = len(host_split)
    weight = np.ones(n)
    if cfg.population != "physical":
        return uniform_systems(cfg, n, rng), weight
    groups = {
        "train": host_split == "train",
        "measure": (host_split != "train") & ~(host_control & (cfg.control_hosts == "parent")),
        "parent": (host_split != "train") & host_control & (cfg.control_hosts == "parent"),
    }
    parts = {}
    if groups["train"].any():
        k = int(groups["train"].sum())
        if cfg.lessons_config is not None:
            parts["train"] = lessons(k, rng, cfg.physical_train_params, cfg.lessons_config)
        else:
            parts["train"] = physical.sample(k, rng, cfg.physical_train_params if cfg.physical_train else cfg.physical_params)
    if groups["measure"].any():
        k = int(groups["measure"].sum())
        if cfg.measurement_config is not None:
            parts["measure"], w = measurement(k, rng, cfg.physical_params, cfg.measurement_config, cfg.seed)
            weight[groups["measure"]] = w
        else:
            parts["measure"] = physical.sample(k, rng, cfg.physical_params)
    if groups["parent"].any():
        parts["parent"] = physical.sample(int(groups["parent"].sum()), rng, {**cfg.physical_params, "weighting": "volume"})
    cols = list(HOST_COLUMNS + PHYSICAL_HOST_EXTRAS + PHYSICAL_SOURCE_EXTRAS + SYSTEM_COLUMNS)
    out = pd.DataFrame(index=np.arange(n), columns=cols, dtype=float)
    for name, s in parts.items():
        out.loc[groups[name], cols] = system_frame(s)[cols].to_numpy()
    return out, weight


def sample_population(cfg: SimConfig, all_train: bool = False) -> pd.DataFrame:
    """One row per stamp with every contract column except the pixels and the rendered metrics.
    ``all_train``: every row drawn as the train split's (lessons, training host kinds, no
    control-only rows): the batches a finder trains on when rendered on the fly."""
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

    # --- hosts, each with the lens system an injection into it gets; then control-only hosts
    n_rows = cfg.n_stamps
    n_hosts = (n_rows + 1) // 2 if cfg.paired else n_rows
    brick_split = np.array([split_of[int(r)] for r in b_region])
    h_brick = rng.integers(0, nb, n_hosts)
    if all_train:
        brick_split[:] = "train"
    # control-only hosts: per split, extra_controls[split] x the split's own hosts, on its bricks
    extra = [rng.choice(np.flatnonzero(brick_split == sp), int(round(m * (brick_split[h_brick] == sp).sum())))
             for sp, m in sorted(cfg.extra_controls.items()) if m > 0 and (brick_split == sp).any()]
    n_extra = int(sum(len(e) for e in extra))
    h_brick = np.concatenate([h_brick, *extra]).astype(np.int64)
    n_all = n_hosts + n_extra
    h_dec = b_dec[h_brick] + rng.uniform(-0.5, 0.5, n_all) * BRICK_SIZE_DEG
    h_ra = (b_ra[h_brick] + rng.uniform(-0.5, 0.5, n_all) * BRICK_SIZE_DEG / np.cos(np.radians(h_dec))) % 360
    # labels are drawn independently of everything but the kind of host row: a control-only host
    # is a control; in paired mode a host yields both
    if cfg.paired:
        host_control = np.zeros(n_all, dtype=bool)
    else:
        host_control = rng.uniform(0, 1, n_all) < cfg.control_fraction
    host_control[n_hosts:] = True
    host_split = brick_split[h_brick]
    systems, sky_weight = host_systems(cfg, host_split, host_control, rng)
    systems["bad_pixel_frac"] = np.clip(sample_prior(P["bad_pixel_frac"], n_all, rng), 0, 1)
    systems["wise_brightmask_frac"] = np.clip(sample_prior(P["wise_brightmask_frac"], n_all, rng), 0, 1)

    # --- rows: hosts -> stamps with labels. Hosts are ordered by brick (as survey cutouts are),
    # so a render batch meets few distinct PSFs.
    order = np.argsort(h_brick, kind="stable")
    h_brick, h_ra, h_dec, host_control, sky_weight = h_brick[order], h_ra[order], h_dec[order], host_control[order], sky_weight[order]
    systems = systems.iloc[order].reset_index(drop=True)
    if cfg.paired:
        paired_hosts = np.flatnonzero(np.isin(order, np.arange(n_hosts)))
        solo = np.flatnonzero(~np.isin(order, np.arange(n_hosts)))
        row_host = np.concatenate([np.repeat(paired_hosts, 2)[:n_rows], solo])
        is_control = np.concatenate([np.tile([1, 0], len(paired_hosts))[:n_rows], np.ones(len(solo), dtype=np.int64)])
    else:
        row_host = np.arange(n_all)
        is_control = host_control.astype(np.int64)
    inj = is_control == 0
    n = len(row_host)
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
    df["region_split"] = "train" if all_train else df["region_id"].map(split_of)
    row_sys = systems.iloc[row_host].reset_index(drop=True)
    for k in HOST_COLUMNS + ("bad_pixel_frac", "wise_brightmask_frac"):
        df[k] = row_sys[k].to_numpy()
    if cfg.population == "physical":
        for k in PHYSICAL_HOST_EXTRAS:
            df[k] = row_sys[k].to_numpy()
    df["sky_weight"] = np.where(inj, sky_weight[row_host], 1.0)

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
