"""Injected stamps from real survey cutouts (``stamps.source: hosts``): real hosts, real fields and
real noise, with simulated arcs painted in by the injection engine.

The host catalogue (CSV or parquet, one row per host) carries the columns of the DR10 sweeps:

    ra, dec                    deg (ICRS)
    brickname                  DR10 brick ('RRRRpDDD' / 'RRRRmDDD': centre RA and |Dec| in 0.1 deg)
    psfsize_g, psfsize_r, psfsize_z     PSF FWHM, arcsec
    psfdepth_g, psfdepth_r, psfdepth_z  5-sigma point-source depth as inverse variance, 1/nMgy^2
                                         (the Tractor unit; the contract's AB depth is
                                         22.5 - 2.5 log10(5 / sqrt(psfdepth)))
    ebv                        mag
    flux_r                     nMgy (the host's total r flux: src_dmag = source r - host r)

and optionally ``shape_r`` (arcsec, the Tractor half-light radius) and ``wise_brightmask_frac``.
A missing column or an unreadable file stops the stage with the file and column named; a row
with a bad value (non-finite, out of range) is rejected with its reason and counted.

For each usable host:

- its grz cutout at 0.262 arcsec/pixel comes through the cutout client (``dhs.cutouts``: cache,
  retries, concurrency limit, offline detection; a rerun fetches only what is missing) from the
  Legacy Survey viewer or a local directory of FITS files;
- the host centre is measured on the cutout (``dhs.imaging.centring.measure_centres``), and the
  lens is placed there, not at the stamp centre;
- the lens and source come from the same population as the simulated survey
  (``simulate.population``, drawn per host, independent of the host's own properties);
- the arc is rendered by ``dhs.simulate.survey.render_arcs`` with the host's own PSF (its
  psfsize per band, profile ``simulate.psf_model`` / ``moffat_beta``), and its own photon noise
  is added (gain from the host's depth, ``dhs.simulate.noise``); the cutout already holds the
  sky, the host, the field and their noise;
- controls are the same cutouts without an arc (``simulate.paired``), or other hosts drawn with
  ``simulate.control_fraction``;
- ``bad_pixel_frac`` is the fraction of pixels without data (exactly zero or non-finite in any
  band, or zero inverse variance where the FITS file carries an inverse-variance HDU); a cutout
  with no data in a band, or none at all, is a row with ``cutout_ok = 0`` (rejected downstream
  with a count, as every failed Phase 4c cutout);
- regions are cells of ``stamps.hosts.region_size_deg`` on the sky, from the brick centre, so a
  brick never straddles two regions; splits are assigned per region exactly as in the simulated
  survey (``simulate.split_fractions``, ``split_salt``).
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from dhs.contract.codec import stamp_column
from dhs.contract.shards import HiveShardWriter
from dhs.cutouts.client import (LEGACYSURVEY, CutoutSpec, FetchConfig, fetch_cutouts, load_cutouts, read_manifest,
                               remembered_failures, write_manifest)
from dhs.cutouts.fits import read_invvar
from dhs.errors import StageError
from dhs.simulate import keyed
from dhs.simulate.config import SimConfig
from dhs.simulate.noise import pixel_variance
from dhs.simulate.population import (AB_ZP_NMGY, PHYSICAL_HOST_EXTRAS, assign_region_splits, fill_bookkeeping, fill_injection_columns,
                                     physical_systems, uniform_systems)
from dhs.simulate.survey import noise_inputs, render_arcs, resolve_device, visibility_metrics
from dhs.imaging.centring import measure_centres

REQUIRED = ("ra", "dec", "brickname", "psfsize_g", "psfsize_r", "psfsize_z", "psfdepth_g", "psfdepth_r", "psfdepth_z", "ebv", "flux_r")
NUMERIC = tuple(c for c in REQUIRED if c != "brickname")
BANDS = "grz"


# what a DR10 catalogue row can hold; a value outside is a typo, a sentinel or a unit error, never a
# host to paint (a 1e6" PSF would give an invisible arc labelled with SNR 11855): rejected as
# implausible_<column>, counted. Depths as 5-sigma AB mag, fluxes as the host's r mag.
PLAUSIBLE = {
    "psfsize": (0.3, 5.0),          # FWHM, arcsec (DR10 South: ~0.7-2.5)
    "psfdepth_mag": (19.0, 28.0),   # 5-sigma point-source depth, AB mag (DR10 South: ~22-25.5)
    "host_r_mag": (10.0, 26.0),     # 22.5 - 2.5 log10(flux_r)
    "ebv": (0.0, 1.0),              # mag (the DR10 South footprint: < ~0.3)
}
DUPLICATE_ARCSEC = 0.1              # rows closer than this are one host given twice
# a host cutout may have this fraction of NaN pixels (a bad column, a masked star): they become no
# data and count toward bad_pixel_frac; more rejects the cutout (nonfinite_pixels)
MAX_NONFINITE_FRAC = 0.05


class HostCatalogError(StageError, ValueError):
    """The host catalogue cannot be used as a whole (unreadable, a column missing, no usable row)."""


def psfdepth_ivar_to_mag(ivar: np.ndarray) -> np.ndarray:
    """Tractor ``psfdepth`` (inverse variance of a point source's flux, 1/nMgy^2) -> 5-sigma AB mag."""
    return AB_ZP_NMGY - 2.5 * np.log10(5.0 / np.sqrt(np.asarray(ivar, float)))


def brick_centre(brickname: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) in degrees of DR10 bricks named 'RRRRpDDD' / 'RRRRmDDD' (NaN where malformed)."""
    names = pd.Series(np.asarray(brickname, dtype=object)).astype(str)
    m = names.str.extract(r"^(\d{4})([pm])(\d{3})$")
    ra = pd.to_numeric(m[0], errors="coerce").to_numpy(float) / 10.0
    dec = pd.to_numeric(m[2], errors="coerce").to_numpy(float) / 10.0 * np.where(m[1] == "m", -1.0, 1.0)
    return ra, dec


def sky_regions(ra_deg: np.ndarray, dec_deg: np.ndarray, size_deg: float) -> np.ndarray:
    """Region ids: cells of about ``size_deg`` x ``size_deg`` (RA cells widen towards the poles
    so that each covers about the same area). Equal inputs give equal ids."""
    row = np.floor((np.asarray(dec_deg, float) + 90.0) / size_deg).astype(np.int64)
    dec_mid = np.clip(-90.0 + (row + 0.5) * size_deg, -89.0, 89.0)
    n_ra = np.maximum(1, np.floor(360.0 * np.cos(np.radians(dec_mid)) / size_deg)).astype(np.int64)
    col = np.floor((np.asarray(ra_deg, float) % 360.0) / 360.0 * n_ra).astype(np.int64)
    return row * 4096 + col


@dataclass
class HostTable:
    hosts: pd.DataFrame                              # the usable rows, with ``host_index`` (row in the file)
    rows_read: int
    rejected: Counter = field(default_factory=Counter)
    examples: list[dict] = field(default_factory=list)


def read_hosts(path: str | Path, max_hosts: int | None = None) -> HostTable:
    """The host catalogue, validated: whole-file problems raise ``HostCatalogError`` naming the
    file and column; bad rows are rejected with a reason (``nonfinite_<col>``, ``bad_coordinates``,
    ``nonpositive_<col>``, ``implausible_<col>`` outside ``PLAUSIBLE``, ``duplicate_host`` within
    ``DUPLICATE_ARCSEC`` of an earlier row, ``bad_brickname``) and counted."""
    path = Path(path)
    if not path.is_file():
        raise HostCatalogError(f"stamps.hosts.catalog: {path} not found (a CSV or parquet host catalogue; docs/real-hosts.md)")
    try:
        df = pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pd.read_csv(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure is the file's fault, said once
        raise HostCatalogError(f"{path}: not a readable {'parquet' if path.suffix.lower() in ('.parquet', '.pq') else 'CSV'} file "
                               f"({type(exc).__name__}: {exc})") from None
    df.columns = [str(c).lower() for c in df.columns]
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise HostCatalogError(f"{path}: missing column(s) {missing}; a host catalogue needs {list(REQUIRED)} "
                               f"(DR10 sweep names and units; docs/real-hosts.md)")
    if max_hosts is not None:
        df = df.iloc[:max_hosts]
    n = len(df)
    reason = np.full(n, "", dtype=object)

    def reject(mask: np.ndarray, why: str) -> None:
        reason[mask & (reason == "")] = why

    values = {}
    for c in NUMERIC:
        v = pd.to_numeric(df[c], errors="coerce").to_numpy(float)
        values[c] = v
        reject(~np.isfinite(v), f"nonfinite_{c}")
    ra, dec = values["ra"], values["dec"]
    reject(~((ra >= 0) & (ra < 360) & (dec >= -90) & (dec <= 90)), "bad_coordinates")
    for c in ("psfsize_g", "psfsize_r", "psfsize_z", "psfdepth_g", "psfdepth_r", "psfdepth_z", "flux_r"):
        reject(~(values[c] > 0), f"nonpositive_{c}")
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for b in "grz":
            lo, hi = PLAUSIBLE["psfsize"]
            reject(~((values[f"psfsize_{b}"] >= lo) & (values[f"psfsize_{b}"] <= hi)), f"implausible_psfsize_{b}")
            lo, hi = PLAUSIBLE["psfdepth_mag"]
            depth = psfdepth_ivar_to_mag(values[f"psfdepth_{b}"])
            reject(~((depth >= lo) & (depth <= hi)), f"implausible_psfdepth_{b}")
        lo, hi = PLAUSIBLE["host_r_mag"]
        mag = 22.5 - 2.5 * np.log10(values["flux_r"])
        reject(~((mag >= lo) & (mag <= hi)), "implausible_flux_r")
        lo, hi = PLAUSIBLE["ebv"]
        reject(~((values["ebv"] >= lo) & (values["ebv"] <= hi)), "implausible_ebv")
    # one host given twice would be painted twice and counted as two: the first row stays
    key = np.stack([np.round(ra * 3600 / DUPLICATE_ARCSEC), np.round(dec * 3600 / DUPLICATE_ARCSEC)], axis=1)
    live = np.flatnonzero(reason == "")
    if len(live):
        _, first = np.unique(key[live], axis=0, return_index=True)
        dup = np.ones(len(live), bool)
        dup[first] = False
        reject(np.isin(np.arange(n), live[dup]), "duplicate_host")
    b_ra, b_dec = brick_centre(df["brickname"].to_numpy())
    reject(~np.isfinite(b_ra), "bad_brickname")
    ok = reason == ""
    table = HostTable(hosts=pd.DataFrame(), rows_read=n, rejected=Counter(reason[~ok].tolist()))
    for i in np.flatnonzero(~ok)[:20]:
        table.examples.append({"file": str(path), "row": int(i), "reason": str(reason[i])})
    if not ok.any():
        raise HostCatalogError(f"{path}: none of its {n} row(s) is usable ({dict(table.rejected)})")
    hosts = pd.DataFrame({"host_index": np.flatnonzero(ok).astype(np.int64), "brickname": df["brickname"].astype(str).to_numpy()[ok],
                          "brick_ra": b_ra[ok], "brick_dec": b_dec[ok]})
    for c in NUMERIC:
        hosts[c] = values[c][ok]
    for c in ("shape_r", "wise_brightmask_frac"):
        hosts[c] = pd.to_numeric(df[c], errors="coerce").to_numpy(float)[ok] if c in df.columns else np.nan
    table.hosts = hosts
    return table


def check_regions(hosts: pd.DataFrame, region_size_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """The hosts' sky regions; fewer than 3 (train, val and test each need one) is an error, said
    before any cutout is fetched."""
    regions = sky_regions(hosts["brick_ra"].to_numpy(), hosts["brick_dec"].to_numpy(), region_size_deg)
    unique_regions = np.unique(regions)
    if unique_regions.size < 3:
        raise HostCatalogError(f"the hosts fall in {unique_regions.size} sky region(s) of {region_size_deg} deg: train, val and "
                               f"test need at least 3 (lower stamps.hosts.region_size_deg, or widen the catalogue)")
    return regions, unique_regions


def host_population(hosts: pd.DataFrame, cfg: SimConfig, region_size_deg: float) -> pd.DataFrame:
    """One row per stamp (every contract column but the pixels and the rendered metrics) for the
    usable hosts: labels, lens systems from ``cfg``'s population, conditions from the catalogue."""
    rng = np.random.default_rng([cfg.seed, 1])
    n_hosts = len(hosts)
    regions, unique_regions = check_regions(hosts, region_size_deg)
    split_of = assign_region_splits(unique_regions, dict(cfg.split_fractions), cfg.split_salt)
    systems = physical_systems(cfg, n_hosts, rng) if cfg.population == "physical" else uniform_systems(cfg, n_hosts, rng)
    if cfg.paired:
        row_host = np.repeat(np.arange(n_hosts), 2)
        is_control = np.tile([1, 0], n_hosts)
    else:
        row_host = np.arange(n_hosts)
        is_control = (rng.uniform(0, 1, n_hosts) < cfg.control_fraction).astype(np.int64)
    h = hosts.iloc[row_host].reset_index(drop=True)
    inj = is_control == 0
    df = pd.DataFrame({
        "task_id": [f"host{cfg.seed}-{int(i):08d}-{'c' if c else 'i'}" for i, c in zip(h["host_index"], is_control)],
        "host_id": h["host_index"].to_numpy(np.int64),
        "noise_seed": h["host_index"].to_numpy(np.int64),
        "region_id": regions[row_host].astype(np.int64),
        "brickname": h["brickname"].to_numpy(),
        "ra": h["ra"].to_numpy(float), "dec": h["dec"].to_numpy(float),
        "is_control": is_control.astype(np.int64),
    })
    df["region_split"] = df["region_id"].map(split_of)
    df["host_r_mag"] = AB_ZP_NMGY - 2.5 * np.log10(h["flux_r"].to_numpy(float))
    df["host_reff_arcsec"] = h["shape_r"].to_numpy(float)
    row_sys = systems.iloc[row_host].reset_index(drop=True)
    if cfg.population == "physical":
        for k in PHYSICAL_HOST_EXTRAS:   # the drawn deflector's (injections only), not this real host's
            df[k] = np.where(inj, row_sys[k].to_numpy(float), 0.0)
    df["psfsize_r"] = h["psfsize_r"].to_numpy(float)
    for b in BANDS:
        df[f"psf_fwhm_used_{b}"] = h[f"psfsize_{b}"].to_numpy(float)
        df[f"psfdepth_{b}"] = psfdepth_ivar_to_mag(h[f"psfdepth_{b}"].to_numpy(float))
    df["ebv"] = h["ebv"].to_numpy(float)
    df["wise_brightmask_frac"] = np.nan_to_num(h["wise_brightmask_frac"].to_numpy(float), nan=0.0)
    fill_injection_columns(df, row_sys, inj, cfg, rng)
    fill_bookkeeping(df, cfg, "hosts")
    return df


def bad_pixel_fraction(cube: np.ndarray, invvar: np.ndarray | None = None) -> float:
    """Pixels without data in any band: exactly zero or non-finite, or zero inverse variance."""
    bad = (cube == 0) | ~np.isfinite(cube)
    if invvar is not None and invvar.shape == cube.shape:
        bad |= ~(invvar > 0)
    return float(bad.any(axis=0).mean())


def paint(rows: pd.DataFrame, cutouts: np.ndarray, cfg: SimConfig, device: torch.device) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Cutouts (B, 3, N, N) nMgy with each injection row's arc painted in at the measured host
    centre, plus the arc's photon noise; the rendered metrics of every row. Controls come back
    unchanged."""
    dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
    x = torch.as_tensor(cutouts, device=device, dtype=dtype)
    centres = measure_centres(x)                      # (dy, dx) px from the stamp centre
    s = cfg.pixel_scale_arcsec
    lens_y = centres[:, 0].double().cpu().numpy() * s
    lens_x = centres[:, 1].double().cpu().numpy() * s
    arc, magnification, knot_frac = render_arcs(rows, lens_x, lens_y, cfg, device)
    sigma, gain = noise_inputs(rows, cfg)
    sig_t, gain_t = torch.as_tensor(sigma, device=device, dtype=dtype), torch.as_tensor(gain, device=device, dtype=dtype)
    out = x.clone()
    inj = np.flatnonzero(rows["is_control"].to_numpy() == 0)
    if inj.size:
        idx = torch.as_tensor(inj, device=device)
        out[idx] = x[idx] + arc[idx]
    if inj.size and cfg.noise_model.photon_noise:
        keys = torch.as_tensor(rows["noise_seed"].to_numpy(np.int64)[inj], device=device)
        z = keyed.normals(keyed.stamp_keys(cfg.seed, keyed.STREAM_ARC_PHOTONS, keys), tuple(arc.shape[1:])).to(dtype)
        out[idx] += z * (arc[idx].clamp_min(0) / gain_t[idx][..., None, None]).sqrt()
    arc_r = arc[:, 1:2]
    # the cutout holds sky + host + its noise: its positive part stands in for the host light
    var = pixel_variance(x.clamp_min(0), arc, sig_t, gain_t, cfg.noise_model)
    var_r = var[:, 1:2]
    mu = magnification
    with np.errstate(divide="ignore", invalid="ignore"):
        lensed = np.where(mu > 0, rows["src_r_mag"].to_numpy(float) - 2.5 * np.log10(np.where(mu > 0, mu, 1.0)), 0.0)
    metrics = {"arc_snr": (arc_r / var_r.sqrt()).flatten(1).amax(dim=1).clamp_min(0).double().cpu().numpy(),
               "total_injected_flux_r": arc_r.flatten(1).sum(dim=1).double().cpu().numpy(),
               "magnification": magnification, "knot_flux_fraction": knot_frac, "lensed_src_r_mag": lensed,
               **visibility_metrics(rows, arc, var, magnification),
               "host_dy_px": centres[:, 0].double().cpu().numpy(), "host_dx_px": centres[:, 1].double().cpu().numpy()}
    for j, b in enumerate(BANDS):
        metrics[f"sky_sigma_{b}_nmgy"] = sigma[:, j]
    return out.float().cpu().numpy(), metrics


def fetch_host_cutouts(hosts: pd.DataFrame, hp: dict[str, Any], stamp_size: int, progress: bool = True):
    """Bring every host's cutout into ``stamps.hosts.cache_dir``; (fetch result, loaded cutouts)."""
    spec = CutoutSpec(size_px=int(stamp_size), pixscale_arcsec=0.262, layer=hp["layer"], max_nonfinite_frac=MAX_NONFINITE_FRAC)
    positions = pd.DataFrame({"ra_deg": hosts["ra"].to_numpy(float), "dec_deg": hosts["dec"].to_numpy(float),
                              "name": [f"host{int(i)}" for i in hosts["host_index"]]})
    # the fetch keys stamps.hosts holds; the others at the known_lenses section's defaults
    fetch_keys = ("url_template", "max_concurrency", "max_attempts", "read_timeout_s", "run_deadline_s")
    cfg = FetchConfig.from_params({k: hp[k] for k in fetch_keys})
    legacy = hp["cutouts"] == LEGACYSURVEY
    # permanent failures of an earlier run (404, no data, NaN pixels) are not asked again
    known = remembered_failures(read_manifest(hp["cache_dir"])) if legacy else {}
    res = fetch_cutouts(positions, hp["cache_dir"], spec, source=hp["cutouts"], cfg=cfg, progress=progress, remembered=known)
    if legacy:
        write_manifest(res, ["host"] * len(positions), hp["cache_dir"])
    return res, load_cutouts(positions, hp["cache_dir"], spec), spec


def write_host_dataset(hp: dict[str, Any], cfg: SimConfig, out_dir: str | Path, rows_per_shard: int = 2000,
                       progress: bool = True) -> dict:
    """Fetch, paint and write the host catalogue's stamps into ``out_dir`` (Hive-partitioned
    contract parquet). Returns the accounting: catalogue rows read and rejected by reason,
    cutouts by status, stamps written per split."""
    if not hp.get("catalog"):
        raise HostCatalogError("stamps.source is 'hosts' but stamps.hosts.catalog is not set (a CSV or parquet host catalogue)")
    device = resolve_device(cfg.device)
    table = read_hosts(hp["catalog"], hp.get("max_hosts"))
    hosts = table.hosts
    check_regions(hosts, hp["region_size_deg"])   # what can be checked before any cutout is fetched
    fetched, loaded, spec = fetch_host_cutouts(hosts, hp, cfg.stamp_size, progress)
    # why a host has no cutout: the fetch's reason (http_404, no_coverage, offline, ...), else the re-read's
    fetch_reason = fetched.rows["reason"].astype(str).to_numpy()
    why = np.where(loaded.usable, "", np.where(fetch_reason != "", fetch_reason, loaded.reason.astype(str)))
    reason_by_host = dict(zip(hosts["host_index"].to_numpy(), why))
    cube_row = np.full(len(hosts), -1)
    cube_row[loaded.usable] = np.arange(int(loaded.usable.sum()))
    cube_of = dict(zip(hosts["host_index"].to_numpy(), cube_row))
    # once per host (a paired host gives two rows): blank pixels, and masked ones where the file has invvar
    bad_of = {h: bad_pixel_fraction(loaded.images_nmgy[cube_row[i]], read_invvar(Path(hp["cache_dir"]) / loaded.keys[i], cfg.stamp_size))
              for i, h in enumerate(hosts["host_index"].to_numpy()) if cube_row[i] >= 0}
    population = host_population(hosts, cfg, hp["region_size_deg"])
    writer = HiveShardWriter(out_dir, rows_per_shard=rows_per_shard)
    n = cfg.stamp_size
    not_used = Counter()
    with ThreadPoolExecutor(max_workers=2) as pool, tqdm(total=len(population), desc=f"paint host cutouts ({device.type})",
                                                           unit="stamp", disable=not progress) as bar:
        for start in range(0, len(population), cfg.batch_size):
            rows = population.iloc[start: start + cfg.batch_size].copy()
            which = np.array([cube_of[h] for h in rows["host_id"]])
            ok = which >= 0
            cut = np.zeros((len(rows), 3, n, n), np.float32)
            cut[ok] = loaded.images_nmgy[which[ok]]
            images, metrics = paint(rows, cut, cfg, device)
            for k, v in metrics.items():
                rows[k] = np.where(ok, v, 0.0)
            rows["discoverable"] = rows["discoverable"].astype(np.int64)
            rows["cutout_ok"] = ok.astype(np.int64)
            rows["bad_pixel_frac"] = [bad_of.get(h, 1.0) for h in rows["host_id"]]
            rows["control_kind"] = np.where(rows["is_control"].to_numpy() == 1, "real_host", "")
            for h, good in zip(rows["host_id"], ok):
                if not good:
                    not_used[reason_by_host[h] or "missing"] += 1
            column = stamp_column(np.asarray(images), ok, compress=True, map_fn=pool.map)
            writer.add(rows.drop(columns=["noise_seed"]), {"stamp_npz": column})
            bar.update(len(rows))
    writer.close()
    return {"catalog": str(hp["catalog"]), "hosts_read": table.rows_read, "hosts_rejected_by_reason": dict(sorted(table.rejected.items())),
            "hosts_rejected_examples": table.examples, "hosts_usable": int(len(hosts)),
            "cutouts": {"source": fetched.source, "status": fetched.status, **fetched.counts(), "usable_loaded": int(loaded.usable.sum()),
                        "not_usable_by_reason": dict(sorted(Counter(r for r in why if r).items()))},
            "stamps_without_cutout_by_reason": dict(sorted(not_used.items())),
            "rows_written_by_split": dict(sorted(writer.rows_written.items())), "n_files": len(writer.files),
            "device": device.type, "cutout_cache": str(Path(hp["cache_dir"]) / spec.cache_subdir)}
