"""Injection into real cutouts (stamps.source: hosts), offline: the "real" cutouts are the
simulator's own host-and-field stamps written as Legacy Survey FITS files, served from a local
directory and from an HTTP server on loopback. The arc painted into a cutout is the engine's arc
rendered alone, placed at the host centre measured on the cutout, with its flux conserved; the
catalogue's bad rows and the cutouts the server does not have are counted; the stage writes a
contract dataset the rest of the pipeline reads."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from dhs.cutouts.client import CutoutSpec, cache_relpath
from dhs.cutouts.fits import cutout_bytes
from dhs.params import load
from dhs.simulate.config import SimConfig
from dhs.simulate.population import sample_population
from dhs.simulate.survey import render_arcs, render_batches
from dhs.stamps import stage
from dhs.stamps.real_hosts import (HostCatalogError, brick_centre, host_population, paint, psfdepth_ivar_to_mag, read_hosts,
                                   sky_regions)
from tests.conftest import REPO
from tests.known_lenses.test_known_lenses import CutoutServer

N_HOSTS = 36


def _sim_cfg(**over) -> SimConfig:
    sim = dict(load(REPO / "params.yaml")["simulate"])
    sim.update(n_stamps=2 * N_HOSTS, device="cpu", n_regions=12, **over)
    return SimConfig.from_params(sim)


@pytest.fixture(scope="module")
def real_sky(tmp_path_factory):
    """The simulator's controls as 'real' cutouts, and a sweep-like catalogue of their hosts."""
    cfg = _sim_cfg()
    pop = sample_population(cfg)
    controls, images = [], []
    for b in render_batches(pop, cfg):
        keep = (b.rows["is_control"].to_numpy() == 1) & (b.rows["cutout_ok"].to_numpy() == 1)
        controls.append(b.rows[keep])
        images.append(b.images[keep])
    rows = pd.concat(controls, ignore_index=True)
    cubes = np.concatenate(images)
    flux5 = lambda m: 10 ** (-0.4 * (m - 22.5))  # noqa: E731 - 5-sigma flux in nMgy
    cat = pd.DataFrame({"ra": rows["ra"], "dec": rows["dec"], "brickname": rows["brickname"], "ebv": rows["ebv"],
                        "flux_r": 10 ** (-0.4 * (rows["host_r_mag"] - 22.5)), "shape_r": rows["host_reff_arcsec"]})
    for b in "grz":
        cat[f"psfsize_{b}"] = rows[f"psf_fwhm_used_{b}"]
        cat[f"psfdepth_{b}"] = 25.0 / flux5(rows[f"psfdepth_{b}"]) ** 2   # Tractor unit: 1/nMgy^2
    root = tmp_path_factory.mktemp("real_sky")
    fits_dir = root / "fits"
    spec = CutoutSpec(size_px=cfg.stamp_size)
    for (ra, dec), cube in zip(zip(cat["ra"], cat["dec"]), cubes):
        f = fits_dir / cache_relpath(ra, dec, spec).split("/")[-1]
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(cutout_bytes(cube, header=_viewer_header(ra, dec, cfg.stamp_size)))
    return cfg, cat, cubes, rows, fits_dir


def _viewer_header(ra: float, dec: float, size: int) -> dict:
    """The WCS and provenance cards a Legacy Survey viewer cutout carries (TAN projection, north up,
    east left, 0.262 arcsec/pixel)."""
    return {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": float(ra), "CRVAL2": float(dec),
            "CRPIX1": (size + 1) / 2, "CRPIX2": (size + 1) / 2, "CD1_1": -0.262 / 3600, "CD1_2": 0.0, "CD2_1": 0.0,
            "CD2_2": 0.262 / 3600, "SURVEY": "LegacySurveys", "VERSION": "DR10", "IMAGETYP": "IMAGE"}


def test_catalogue_units_and_regions():
    # psfdepth is an inverse variance: 5 sigma of 1/sqrt(ivar) nMgy at AB zero point 22.5
    assert psfdepth_ivar_to_mag(np.array([25.0 / (10 ** (-0.4 * (24.0 - 22.5))) ** 2]))[0] == pytest.approx(24.0)
    ra, dec = brick_centre(np.array(["1234p056", "0001m123", "bad"]))
    assert ra[:2] == pytest.approx([123.4, 0.1]) and dec[:2] == pytest.approx([5.6, -12.3]) and np.isnan(ra[2])
    r = sky_regions(np.array([10.2, 10.6, 14.5, 10.2]), np.array([0.1, 1.9, 0.1, -0.1]), 2.0)   # cells ~2.01 deg wide in RA here
    assert r[0] == r[1] and r[0] != r[2] and r[0] != r[3]


def test_bad_catalogues_are_refused_or_their_rows_counted(real_sky, tmp_path):
    _, cat, *_ = real_sky
    with pytest.raises(HostCatalogError, match=r"missing column\(s\) \['psfdepth_z'\]"):
        cat.drop(columns=["psfdepth_z"]).to_csv(tmp_path / "a.csv", index=False)
        read_hosts(tmp_path / "a.csv")
    with pytest.raises(HostCatalogError, match="not found"):
        read_hosts(tmp_path / "nope.parquet")
    bad = cat.copy()
    bad.loc[0, "psfsize_r"] = np.nan
    bad.loc[1, "brickname"] = "x"
    bad.loc[2, "flux_r"] = -1.0
    bad.loc[3, "dec"] = 95.0
    bad.to_parquet(tmp_path / "b.parquet", index=False)
    t = read_hosts(tmp_path / "b.parquet")
    assert t.rows_read == len(cat) and len(t.hosts) == len(cat) - 4
    assert dict(t.rejected) == {"nonfinite_psfsize_r": 1, "bad_brickname": 1, "nonpositive_flux_r": 1, "bad_coordinates": 1}
    assert {e["row"] for e in t.examples} == {0, 1, 2, 3} and all(e["file"].endswith("b.parquet") for e in t.examples)


def test_impossible_catalogue_values_and_repeated_hosts_are_counted_never_painted(real_sky, tmp_path):
    """Values no DR10 row can hold (a 1e6" or 1e-9" PSF, an infinite depth, a flux brighter than
    any galaxy, a negative E(B-V)) would become labels (an invisible arc with SNR 11855, host
    r = -727) or crash deep inside: each is a counted implausible_<column> rejection; a host given
    twice is painted once."""
    _, cat, *_ = real_sky
    bad = cat.copy()
    bad.loc[0, "psfsize_r"] = 1e6
    bad.loc[1, "psfsize_g"] = 1e-9
    bad.loc[2, "psfdepth_r"] = 1e300
    bad.loc[3, "flux_r"] = 1e300
    bad.loc[4, "ebv"] = -0.2
    bad.loc[5, "psfdepth_z"] = 1e-12          # 5-sigma depth ~ 8 mag
    dup = bad.iloc[[6, 7]].copy()
    dup["ra"] += 0.01 / 3600                 # 0.01": the same host
    bad = pd.concat([bad, dup], ignore_index=True)
    bad.to_csv(tmp_path / "c.csv", index=False)
    t = read_hosts(tmp_path / "c.csv")
    assert dict(t.rejected) == {"implausible_psfsize_r": 1, "implausible_psfsize_g": 1, "implausible_psfdepth_r": 1,
                                "implausible_flux_r": 1, "implausible_ebv": 1, "implausible_psfdepth_z": 1, "duplicate_host": 2}
    assert t.rows_read == len(cat) + 2 and len(t.hosts) == len(cat) - 6
    assert sorted(e["row"] for e in t.examples) == [0, 1, 2, 3, 4, 5, len(cat), len(cat) + 1]
    assert (t.hosts["psfsize_r"].between(0.3, 5.0)).all()


def test_the_painted_arc_is_the_engines_arc_at_the_measured_host_centre(real_sky):
    """With the arc's photon noise off, painted - cutout is exactly the arc the engine renders alone
    at the host centre measured on the cutout; an Einstein ring (source on the axis) is centred on
    the host, and the arc's flux is the source flux times the magnification (to 1e-3)."""
    cfg0, cat, cubes, rows_sim, _ = real_sky
    # smooth sources (knots would make the ring lopsided), no photon noise: the arc is exactly the engine's
    cfg = _sim_cfg(noise={**_noise_params(), "photon_noise": False}, population="uniform", paired=True, knots=None)
    hosts = read_hosts_frame(cat)
    pop = host_population(hosts, cfg, 2.0)
    inj = pop[pop["is_control"] == 0].iloc[:12].copy()
    # an Einstein ring: SIS, source on the optical axis, compact and bright
    inj["lens_q"], inj["shear_g1"], inj["shear_g2"] = 1.0, 0.0, 0.0
    inj["src_x_arcsec"], inj["src_y_arcsec"], inj["src_e"], inj["theta_e_arcsec"] = 0.0, 0.0, 0.0, 1.5
    which = np.searchsorted(hosts["host_index"].to_numpy(), inj["host_id"].to_numpy())
    cut = cubes[which].astype(np.float32)
    out, metrics = paint(inj, cut, cfg, torch.device("cpu"))
    arc = out - cut
    lx, ly = metrics["host_dx_px"] * cfg.pixel_scale_arcsec, metrics["host_dy_px"] * cfg.pixel_scale_arcsec
    alone, mu, _ = render_arcs(inj, lx, ly, cfg, torch.device("cpu"))
    np.testing.assert_allclose(arc, alone.float().numpy(), atol=1e-6 * np.abs(alone.numpy()).max())
    # the ring's light-weighted centre is the host's measured centre, which is where the host is
    n = cfg.stamp_size
    yy, xx = np.mgrid[0:n, 0:n] - (n - 1) / 2
    r_band = arc[:, 1]
    cy, cx = (r_band * yy).sum((1, 2)) / r_band.sum((1, 2)), (r_band * xx).sum((1, 2)) / r_band.sum((1, 2))
    np.testing.assert_allclose(cy, metrics["host_dy_px"], atol=0.15)
    np.testing.assert_allclose(cx, metrics["host_dx_px"], atol=0.15)
    true_dy = rows_sim["host_y_arcsec"].to_numpy()[which] / cfg.pixel_scale_arcsec
    true_dx = rows_sim["host_x_arcsec"].to_numpy()[which] / cfg.pixel_scale_arcsec
    assert np.median(np.hypot(cy - true_dy, cx - true_dx)) < 0.5
    # flux: the PSF conserves it; the arc holds the source flux x magnification
    src_r = 10 ** (-0.4 * (inj["src_r_mag"].to_numpy() - 22.5))
    np.testing.assert_allclose(metrics["total_injected_flux_r"], src_r * mu, rtol=1e-3)


def _noise_params() -> dict:
    return dict(load(REPO / "params.yaml")["simulate"]["noise"])


def read_hosts_frame(cat: pd.DataFrame) -> pd.DataFrame:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        cat.to_csv(Path(d) / "c.csv", index=False)
        return read_hosts(Path(d) / "c.csv").hosts


def _params(tmp_path, cat_path, cutouts, **hosts) -> str:
    p = yaml.safe_load((REPO / "params.yaml").read_text())
    p["stamps"].update(source="hosts", hosts={"catalog": str(cat_path), "cutouts": str(cutouts), "cache_dir": str(tmp_path / "hc"),
                                              "region_size_deg": 2.0, **hosts})
    p["stamps"]["max_reject_frac"] = 0.3   # the service test leaves three hosts without a cutout on purpose
    p["simulate"].update(n_regions=12, device="cpu", paired=True, split_fractions={"train": 0.5, "val": 0.25, "test": 0.25})
    out = tmp_path / "params.yaml"
    out.write_text(yaml.safe_dump(p, sort_keys=False))
    return str(out)


def test_stage_from_a_local_fits_directory_writes_a_contract_dataset(real_sky, tmp_path):
    import shutil

    cfg, cat, cubes, _, src_dir = real_sky
    # two hosts with missing data: a blank stripe (a chip gap) and zero inverse variance (masked pixels)
    fits_dir = tmp_path / "fits"
    shutil.copytree(src_dir, fits_dir)
    spec = CutoutSpec(size_px=cfg.stamp_size)
    name = lambda i: cache_relpath(cat["ra"][i], cat["dec"][i], spec).split("/")[-1]  # noqa: E731
    gap = cubes[1].copy()
    gap[:, :, :8] = 0.0                                  # 8 of 64 columns: 12.5 % of the pixels
    (fits_dir / name(1)).write_bytes(cutout_bytes(gap))
    iv = np.ones_like(cubes[2])
    iv[1, :16, :16] = 0.0                                # 256 of 4096 pixels in r: 6.25 %
    (fits_dir / name(2)).write_bytes(cutout_bytes(cubes[2], invvar=iv))
    few_nan = cubes[3].copy()
    few_nan[0, 10:14, 20:30] = np.nan                     # 40 NaN pixels in g, ~1 %: no data there, counted
    (fits_dir / name(3)).write_bytes(cutout_bytes(few_nan))
    many_nan = cubes[4].copy()
    many_nan[2, :, :16] = np.nan                          # a quarter of the pixels: not a usable cutout
    (fits_dir / name(4)).write_bytes(cutout_bytes(many_nan))
    bad = cat.copy()
    bad.loc[0, "psfdepth_r"] = 0.0
    bad.to_csv(tmp_path / "hosts.csv", index=False)
    m = stage.run(_params(tmp_path, tmp_path / "hosts.csv", fits_dir), out_dir=str(tmp_path / "stamps"),
                  metrics_path=str(tmp_path / "m" / "stamps.json"), cache_dir=str(tmp_path / "cache"), progress=False,
                  plots_dir=str(tmp_path / "plots"))
    h = m["hosts"]
    assert h["hosts_read"] == len(cat) and h["hosts_rejected_by_reason"] == {"nonpositive_psfdepth_r": 1}
    assert h["hosts_usable"] == len(cat) - 1 == h["cutouts"]["usable_loaded"] + 1
    assert h["cutouts"]["not_usable_by_reason"] == {"nonfinite_pixels": 1}
    # paired: a control and an injection per usable host, every row accounted for
    assert m["rows_read"] == 2 * (len(cat) - 1) == m["rows_used"] + m["rows_rejected"] and m["rows_rejected"] == 2
    assert m["region_disjoint"] and m["host_disjoint"] and set(m["cache"]["rows_by_split"]) == {"train", "val", "test"}
    from dhs.imaging.cache import open_split

    test = open_split(tmp_path / "cache", "test")
    meta = test.meta
    assert set(meta["control_kind"][meta["is_control"] == 1]) == {"real_host"}
    inj = meta["is_control"].to_numpy() == 0
    assert (meta["arc_snr"][inj] > 0).all() and (meta["theta_e_arcsec"][inj] > 0).all()
    assert json.loads((tmp_path / "m" / "stamps.headline.json").read_text())["source"] == "hosts"
    every = pd.concat([open_split(tmp_path / "cache", sp).meta for sp in ("train", "val", "test")])
    frac = every.groupby("ra")["bad_pixel_frac"].first()
    assert frac[cat["ra"][1]] == pytest.approx(0.125) and frac[cat["ra"][2]] == pytest.approx(0.0625)
    assert frac[cat["ra"][3]] == pytest.approx(40 / 4096, abs=1e-3) and cat["ra"][4] not in frac.index
    assert (frac.drop([cat["ra"][1], cat["ra"][2], cat["ra"][3]]) < 0.01).all()


def test_a_partial_fetch_is_loud_with_its_causes_and_a_forced_rerun_fetches_the_rest(real_sky, tmp_path, capsys):
    """The service fails for some hosts (5xx until it recovers): the stage still writes what it
    has (the loss is under max_reject_frac) but says so on stderr with the cause of each missing
    cutout and the command that retries them; that command, once the service answers, fetches
    exactly the missing ones and every host is painted."""
    cfg, cat, cubes, *_ = real_sky
    srv = CutoutServer()
    try:
        for i, (ra, dec) in enumerate(zip(cat["ra"], cat["dec"])):
            srv.add(ra, dec, cubes[i], fail_first=100 if i in (1, 4) else 0)
            srv.cubes[(f"{round(ra, 5):.5f}", f"{round(dec, 5):.5f}")] = cutout_bytes(cubes[i], header=_viewer_header(ra, dec, cfg.stamp_size))
        cat.to_csv(tmp_path / "hosts.csv", index=False)
        params = _params(tmp_path, tmp_path / "hosts.csv", "legacysurvey", url_template=srv.template, max_attempts=2)
        run = lambda k: stage.run(params, out_dir=str(tmp_path / f"stamps{k}"), metrics_path=str(tmp_path / f"m{k}" / "stamps.json"),  # noqa: E731
                                  cache_dir=str(tmp_path / f"cache{k}"), progress=False, plots_dir=str(tmp_path / f"plots{k}"))
        m = run(1)
        err = capsys.readouterr().err
        assert m["hosts"]["cutouts"]["usable_loaded"] == len(cat) - 2
        assert "HOST CUTOUTS PARTIAL" in err and "'http_503': 2" in err and "dvc repro -f stamps" in err, err[-2000:]
        for key in list(srv.fail_first):
            srv.fail_first[key] = 0            # the service recovers
        before = len(srv.requests)
        m = run(2)
        assert len(srv.requests) - before == 2 and m["hosts"]["cutouts"]["usable_loaded"] == len(cat)
        assert "HOST CUTOUTS" not in capsys.readouterr().err
    finally:
        srv.close()


def test_too_few_sky_regions_is_said_before_any_cutout_is_fetched(real_sky, tmp_path):
    cfg, cat, cubes, *_ = real_sky
    srv = CutoutServer()
    try:
        for i, (ra, dec) in enumerate(zip(cat["ra"], cat["dec"])):
            srv.add(ra, dec, cubes[i])
        one_brick = cat.assign(brickname=cat["brickname"].iloc[0])   # every host in one brick: one sky region
        one_brick.to_csv(tmp_path / "hosts.csv", index=False)
        params = _params(tmp_path, tmp_path / "hosts.csv", "legacysurvey", url_template=srv.template)
        with pytest.raises(HostCatalogError, match=r"fall in 1 sky region\(s\) of 2.0 deg: train, val and test need at least 3"):
            stage.run(params, out_dir=str(tmp_path / "stamps"), metrics_path=str(tmp_path / "m" / "stamps.json"),
                      cache_dir=str(tmp_path / "cache"), progress=False, plots_dir=str(tmp_path / "plots"))
        assert srv.requests == []
    finally:
        srv.close()


def test_stage_through_the_cutout_service_counts_what_it_could_not_fetch(real_sky, tmp_path):
    cfg, cat, cubes, *_ = real_sky
    srv = CutoutServer()
    try:
        for i, (ra, dec) in enumerate(zip(cat["ra"], cat["dec"])):
            srv.add(ra, dec, cubes[i], behaviour="404" if i < 3 else "ok", fail_first=1 if i == 5 else 0)
            srv.cubes[(f"{round(ra, 5):.5f}", f"{round(dec, 5):.5f}")] = cutout_bytes(cubes[i], header=_viewer_header(ra, dec, cfg.stamp_size))
        cat.to_csv(tmp_path / "hosts.csv", index=False)
        params = _params(tmp_path, tmp_path / "hosts.csv", "legacysurvey", url_template=srv.template, max_attempts=3)
        m = stage.run(params, out_dir=str(tmp_path / "stamps"), metrics_path=str(tmp_path / "m" / "stamps.json"),
                      cache_dir=str(tmp_path / "cache"), progress=False, plots_dir=str(tmp_path / "plots"))
        c = m["hosts"]["cutouts"]
        assert c["usable_loaded"] == len(cat) - 3 and c["not_usable_by_reason"] == {"http_404": 3}
        assert m["hosts"]["stamps_without_cutout_by_reason"] == {"http_404": 6}     # a control and an injection each
        assert m["rows_rejected"] == 6 and m["rejected_by_reason"] == {"cutout_not_ok": 6}
        n_requests = len(srv.requests)
        # a rerun asks for nothing: the cutouts are cached and the 404s remembered; it writes the same stamps
        stage.run(params, out_dir=str(tmp_path / "stamps2"), metrics_path=str(tmp_path / "m2" / "stamps.json"),
                  cache_dir=str(tmp_path / "cache2"), progress=False, plots_dir=str(tmp_path / "plots2"))
        assert len(srv.requests) == n_requests
    finally:
        srv.close()
    a = sorted(p.read_bytes() for p in (tmp_path / "stamps").rglob("*.parquet"))
    b = sorted(p.read_bytes() for p in (tmp_path / "stamps2").rglob("*.parquet"))
    assert a == b
