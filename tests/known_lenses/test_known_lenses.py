"""Known-lens recovery: catalogue curation, the cutout client against a real HTTP server on
loopback (serving FITS cubes of simulated lenses), recall arithmetic and both stages."""

from __future__ import annotations

import copy
import dataclasses
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pandas as pd
import pytest
import yaml

from dhs.evaluation.intervals import wilson_interval
from dhs.known_lenses.catalog import (COLUMNS, DEFAULT_PATH, GRADES, CatalogError, curate, match_groups, read_catalog,
                                      select_lenses, write_catalog)
from dhs.cutouts.fits import CutoutInvalid, cutout_bytes, read_cutout
from dhs.cutouts.client import (CutoutSpec, FetchConfig, cache_relpath, cutout_url, fetch_cutouts, load_cutouts, remembered_failures,
                               write_manifest)
from dhs.cutouts.footprint import footprint_reason
from dhs.known_lenses.operating_points import OperatingPointError, load_score_thresholds, probability_points
from dhs.known_lenses.recall import RecallPoint, recall_by_group, recall_entry
from dhs.params import ParamsError
from tests.conftest import REPO, free_port, small_sim_params

SPEC = CutoutSpec(size_px=64)
FAST = dict(connect_timeout_s=1.0, read_timeout_s=5.0, backoff_s=0.01)   # known_lenses keys: short timeouts and backoff


# --------------------------------------------------------------------------- simulated lenses and the server

@pytest.fixture(scope="module")
def lens_cubes() -> np.ndarray:
    """Six simulated lenses (SIE + bright Sersic source on a de Vaucouleurs host), (6, 3, 64, 64) nMgy."""
    from dhs.simulate.config import SimConfig
    from dhs.simulate.population import sample_population
    from dhs.simulate.survey import render_batches

    p = small_sim_params(n_stamps=24, n_regions=4)
    p["priors"] = copy.deepcopy(p["priors"])
    p["priors"]["src_r_mag"] = {"dist": "uniform", "low": 20.0, "high": 20.5}
    cfg = SimConfig.from_params(p)
    pop = sample_population(cfg)
    pop = pop[(pop["is_control"] == 0) & (pop["cutout_ok"] == 1)].head(6)
    images = np.concatenate([b.images for b in render_batches(pop, cfg)])
    assert images.shape == (6, 3, 64, 64) and np.isfinite(images).all()
    return images


def positions(n: int, ra0: float = 150.0) -> pd.DataFrame:
    return pd.DataFrame({"name": [f"LENS-{i}" for i in range(n)], "ra_deg": ra0 + 0.01 * np.arange(n),
                         "dec_deg": 2.0 + 0.01 * np.arange(n)})


class CutoutServer:
    """The viewer's cutout.fits on 127.0.0.1: a cube per rounded (ra, dec), with scripted
    misbehaviour per position: ``fail_first`` (503 that many times), ``404``, ``bad_shape``."""

    def __init__(self, delay_s: float = 0.0):
        self.cubes: dict[tuple[str, str], bytes] = {}
        self.behaviour: dict[tuple[str, str], str] = {}
        self.fail_first: dict[tuple[str, str], int] = {}
        self.requests: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self.delay_s = delay_s
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                q = {k: v[0] for k, v in parse_qs(urlparse(self.path).query).items()}
                key = (q.get("ra"), q.get("dec"))
                with server.lock:
                    server.requests.append(q)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    n_seen = sum(1 for r in server.requests if (r.get("ra"), r.get("dec")) == key)
                try:
                    time.sleep(server.delay_s)
                    what = server.behaviour.get(key, "ok")
                    if what == "redirect_loop":
                        return self._redirect(self.path)
                    if what == "redirect_offsite":
                        return self._redirect(f"http://127.0.0.2:9{self.path}")
                    if what == "redirect_once" and "hop" not in q:
                        return self._redirect(self.path + "&hop=1")
                    if key not in server.cubes or what == "404":
                        return self._send(404, b"not found", "text/plain")
                    if n_seen <= server.fail_first.get(key, 0):
                        return self._send(503, b"busy", "text/plain")
                    body = server.cubes[key]
                    if what == "bad_shape":
                        body = cutout_bytes(np.zeros((2, 64, 64), np.float32) + 0.01)
                    self._send(200, body, "image/fits")
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def _redirect(self, location):
                self.send_response(302)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _send(self, code, body, ctype):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def template(self) -> str:
        port = self.httpd.server_address[1]
        return f"http://127.0.0.1:{port}/viewer/cutout.fits?ra={{ra}}&dec={{dec}}&layer={{layer}}&pixscale={{pixscale}}&size={{size}}&bands={{bands}}"

    def add(self, ra: float, dec: float, cube: np.ndarray, behaviour: str = "ok", fail_first: int = 0) -> None:
        key = (f"{round(ra, 5):.5f}", f"{round(dec, 5):.5f}")
        self.cubes[key] = cutout_bytes(cube)
        self.behaviour[key] = behaviour
        self.fail_first[key] = fail_first

    def count(self, ra: float, dec: float) -> int:
        key = (f"{round(ra, 5):.5f}", f"{round(dec, 5):.5f}")
        return sum(1 for r in self.requests if (r["ra"], r["dec"]) == key)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = CutoutServer()
    yield s
    s.close()


def config(server: CutoutServer | None = None, max_backoff_s: float = 0.05, **keys) -> FetchConfig:
    """A fetch config from known_lenses keys (``FAST`` unless given, the others at the schema's
    defaults) for ``server`` (None: a closed port)."""
    template = server.template if server else f"http://127.0.0.1:{free_port()}/cutout.fits?ra={{ra}}&dec={{dec}}"
    return FetchConfig.from_params({"url_template": template, **FAST, **keys}, max_backoff_s=max_backoff_s)


# --------------------------------------------------------------------------- catalogue

def _raw_catalogues():
    slacs = pd.DataFrame({"name": ["SDSSJ0001+0000", "SDSSJ0002+4000"], "ra_deg": [10.0, 20.0], "dec_deg": [0.0, 40.0],
                          "theta_e_arcsec": [1.2, 0.9], "z_lens": [0.2, 0.3], "z_source": [0.6, 0.7], "survey": ["SLACS", "BELLS"]})
    lenscat = pd.DataFrame({
        "name": ["L-dup-slacs", "L-ok", "L-prob", "L-cluster", "L-nan", "L-ra", "L-dec", "L-plane", "L-dup-desi"],
        "RA [deg]": [10.0 + 1.0 / 3600, 30.0, 31.0, 32.0, np.nan, 400.0, 33.0, 266.4, 50.0],
        "DEC [deg]": [0.0, -5.0, -5.0, -5.0, 1.0, 1.0, -95.0, -28.9, -10.0],
        "zlens": ["0.21", "not measured", "0.4", "-", "0.3", "0.3", "0.3", "0.3", "0.5"],
        "type": ["galaxy", "galaxy", "galaxy", "cluster", "galaxy", "galaxy", "galaxy", "galaxy", "galaxy"],
        "grading": ["confident", "confident", "probable", "confident", "confident", "confident", "confident", "confident", "confident"],
        "ref": ["r1", "r2 https://x.org/a#frag", "r3", "r4", "r5", "r6", "r7", "r8", "r9"]})
    desi = pd.DataFrame({"name": ["D-dup", "D-ok", "D-north", "D-group"], "ra": [50.0, 60.0, 61.0, 62.0],
                         "dec": [-10.0 + 0.5 / 3600, -20.0, 35.0, -20.0], "zlens": [0.5, np.nan, 0.3, 0.3],
                         "type": ["galaxy", "galaxy", "galaxy", "group"], "grading": ["confident", "probable", "probable", "probable"],
                         "ref": ["Storfer", "Huang", "Huang", "Huang"]})
    return slacs, lenscat, desi


def test_curation_rejects_bad_and_out_of_footprint_rows_with_counts_and_merges_duplicates():
    df, report = curate(*_raw_catalogues())
    r = report.by_source
    assert r["slacs_bells"] == {"rows_read": 2, "rows_selected": 1, "dropped": {"outside_dr10_south_dec": 1}}
    assert r["lenscat"]["dropped"] == {"bad_coordinates": 3, "galactic_plane": 1, "not_confident": 1, "not_galaxy_scale": 1}
    assert r["lenscat"]["rows_selected"] == 3
    assert r["desi_candidates"]["dropped"] == {"not_galaxy_scale": 1, "outside_dr10_south_dec": 1}
    # the SLACS lens 1 arcsec from a lenscat row and a DESI row 0.5 arcsec from a lenscat row: one lens each
    assert report.duplicates_removed == 2 and report.duplicates_by_source == {"DESI": 1, "lenscat": 1}
    assert list(df.columns) == list(COLUMNS) and len(df) == report.rows_out == 4
    slacs = df[df["name"] == "SDSSJ0001+0000"].iloc[0]
    assert slacs["grade"] == "confirmed" and slacs["theta_e_arcsec"] == 1.2 and slacs["also_in"] == "lenscat"
    dup = df[df["name"] == "L-dup-desi"].iloc[0]  # lenscat is better documented than DESI: kept, DESI named
    assert dup["also_in"] == "DESI" and dup["source"] == "lenscat" and dup["z_lens"] == 0.5
    assert df.loc[df["name"] == "L-ok", "z_lens"].isna().all()  # "not measured" is unknown, not a number
    assert df.loc[df["name"] == "D-ok", "grade"].item() == "probable"
    assert list(df["grade"]) == sorted(df["grade"], key=GRADES.index)  # best grade first
    assert df["theta_e_arcsec"].notna().sum() == 1  # theta_E only where a model published it


def test_catalogue_round_trips_through_its_file_with_hash_in_references(tmp_path):
    df, report = curate(*_raw_catalogues())
    path = tmp_path / "kl.csv"
    write_catalog(df, path, ["a header", "References: x"])
    back = read_catalog(path)
    pd.testing.assert_frame_equal(back.reset_index(drop=True), df.reset_index(drop=True), check_dtype=False)
    assert back.loc[back["name"] == "L-ok", "reference"].item() == "r2 https://x.org/a#frag"  # '#' inside a field survives
    bad = path.read_text().replace("30.0,-5.0", "400.0,-5.0")
    (tmp_path / "bad.csv").write_text(bad)
    with pytest.raises(CatalogError, match="bad coordinates"):
        read_catalog(tmp_path / "bad.csv")
    with pytest.raises(CatalogError, match="not found"):
        read_catalog(tmp_path / "missing.csv")


def test_footprint_reasons_and_positional_matching():
    reason = footprint_reason([10, 10, 10, np.nan, -1, 360, 266.4], [0, 32.375, 32.3, 0, 0, 0, -28.9])
    assert list(reason) == ["", "outside_dr10_south_dec", "", "bad_coordinates", "bad_coordinates", "bad_coordinates", "galactic_plane"]
    # 1.9 arcsec apart match, 2.1 arcsec do not; across RA = 0/360 too
    g = match_groups(np.array([10.0, 10.0, 359.99999, 0.00001, 100.0, 100.0]),
                     np.array([0.0, 1.9 / 3600, 0.0, 0.0, 0.0, 2.1 / 3600]), 2.0)
    assert g[0] == g[1] and g[2] == g[3] and g[4] != g[5]


def test_shipped_catalogue_is_curated_and_in_the_footprint():
    df = read_catalog(DEFAULT_PATH)
    header = [line for line in DEFAULT_PATH.read_text().splitlines() if line.startswith("#")]
    assert any("arXiv:2406.04398" in h for h in header) and any("arXiv:0805.1931" in h for h in header)
    assert (footprint_reason(df["ra_deg"], df["dec_deg"]) == "").all()
    assert set(df["grade"]) <= set(GRADES) and set(df["source"]) <= {"SLACS", "BELLS", "lenscat", "DESI"}
    sl = df[df["source"].isin(["SLACS", "BELLS"])]
    assert len(sl) == 34 and (sl["grade"] == "confirmed").all() and sl["theta_e_arcsec"].between(0.5, 2.5).all()
    assert df.loc[~df["source"].isin(["SLACS", "BELLS"]), "theta_e_arcsec"].isna().all()
    g = match_groups(df["ra_deg"].to_numpy(), df["dec_deg"].to_numpy(), 2.0)
    assert len(np.unique(g)) == len(df)  # no two rows within 2 arcsec
    assert len(select_lenses(df, ["confirmed"], 5)) == 5 and (select_lenses(df, ["confirmed"])["grade"] == "confirmed").all()


# --------------------------------------------------------------------------- cutout client

def test_url_and_cache_key_follow_the_legacy_survey_pattern():
    url = cutout_url("https://www.legacysurvey.org/viewer/cutout.fits?ra={ra}&dec={dec}&layer={layer}&pixscale={pixscale}"
                     "&size={size}&bands={bands}", 150.1234567, -2.5, SPEC)
    assert url == "https://www.legacysurvey.org/viewer/cutout.fits?ra=150.12346&dec=-2.50000&layer=ls-dr10&pixscale=0.262&size=64&bands=grz"
    assert cache_relpath(150.1234567, -2.5, SPEC) == "ls-dr10_grz_0.262as_64px/150.12346-02.50000.fits"
    assert cache_relpath(5.0, 2.5, CutoutSpec(size_px=96)) == "ls-dr10_grz_0.262as_96px/005.00000+02.50000.fits"


def test_client_fetches_caches_and_a_second_run_makes_no_requests(server, lens_cubes, tmp_path):
    pos = positions(6)
    for (ra, dec), cube in zip(pos[["ra_deg", "dec_deg"]].to_numpy(), lens_cubes):
        server.add(ra, dec, cube)
    res = fetch_cutouts(pos, tmp_path / "cache", SPEC, cfg=config(server, max_concurrency=3), progress=False)
    assert res.status == "ok" and list(res.rows["status"]) == ["fetched"] * 6 and res.requests == 6
    q = server.requests[0]
    assert (q["layer"], q["pixscale"], q["size"], q["bands"]) == ("ls-dr10", "0.262", "64", "grz")
    loaded = load_cutouts(pos, tmp_path / "cache", SPEC)
    assert loaded.usable.all()
    np.testing.assert_array_equal(loaded.images_nmgy, lens_cubes)  # the nMgy pixels, bit for bit
    n_before = len(server.requests)
    again = fetch_cutouts(pos, tmp_path / "cache", SPEC, cfg=config(server), progress=False)
    assert again.status == "ok" and list(again.rows["status"]) == ["cached"] * 6
    assert again.requests == 0 and len(server.requests) == n_before


def test_client_retries_a_server_that_fails_twice_then_succeeds(server, lens_cubes, tmp_path):
    server.add(150.0, 2.0, lens_cubes[0], fail_first=2)
    res = fetch_cutouts(positions(1), tmp_path, SPEC, cfg=config(server, backoff_s=0.05, max_backoff_s=1.0, max_attempts=4), progress=False)
    row = res.rows.iloc[0]
    assert (row["status"], row["attempts"]) == ("fetched", 3) and server.count(150.0, 2.0) == 3
    assert row["backoff_s"] == pytest.approx(0.05 + 0.1)  # exponential backoff: 0.05 then 0.1 s
    assert load_cutouts(positions(1), tmp_path, SPEC).usable.all()


def test_client_gives_up_on_a_persistent_5xx_after_max_attempts(server, lens_cubes, tmp_path):
    server.add(150.0, 2.0, lens_cubes[0], fail_first=99)
    res = fetch_cutouts(positions(1), tmp_path, SPEC, cfg=config(server, max_attempts=3), progress=False)
    row = res.rows.iloc[0]
    assert (row["status"], row["reason"], row["attempts"]) == ("failed", "http_503", 3) and "gave up after 3" in row["message"]
    assert res.status == "partial" and server.count(150.0, 2.0) == 3


def test_client_reports_404_and_wrong_shape_clearly_without_retrying(server, lens_cubes, tmp_path):
    pos = positions(3)
    server.add(150.0, 2.0, lens_cubes[0])
    server.add(150.01, 2.01, lens_cubes[1], behaviour="404")
    server.add(150.02, 2.02, lens_cubes[2], behaviour="bad_shape")
    res = fetch_cutouts(pos, tmp_path, SPEC, cfg=config(server), progress=False)
    rows = res.rows.set_index("name")
    assert rows.loc["LENS-0", "status"] == "fetched"
    assert (rows.loc["LENS-1", "reason"], rows.loc["LENS-1", "attempts"]) == ("http_404", 1)
    assert "HTTP 404" in rows.loc["LENS-1", "message"]
    assert (rows.loc["LENS-2", "reason"], rows.loc["LENS-2", "attempts"]) == ("bad_shape", 1)
    assert "expected a grz cube of shape (3, 64, 64), got (2, 64, 64)" in rows.loc["LENS-2", "message"]
    assert server.count(150.01, 2.01) == 1 and server.count(150.02, 2.02) == 1
    assert res.status == "ok" and res.counts()["not_usable_by_reason"] == {"bad_shape": 1, "http_404": 1}
    loaded = load_cutouts(pos, tmp_path, SPEC)  # only the valid cutout was cached
    assert list(loaded.usable) == [True, False, False] and list(loaded.reason) == ["", "missing", "missing"]


def test_cutout_validation_counts_nan_and_empty_bands(tmp_path, lens_cubes):
    cube = lens_cubes[0].copy()
    cube[1, 3, 3] = np.nan
    with pytest.raises(CutoutInvalid, match="1 NaN/Inf pixel") as e:
        read_cutout(cutout_bytes(cube), 64)
    assert e.value.reason == "nonfinite_pixels"
    empty = lens_cubes[0].copy()
    empty[0] = 0.0
    with pytest.raises(CutoutInvalid, match=r"no data in band\(s\) g") as e:
        read_cutout(cutout_bytes(empty), 64)
    assert e.value.reason == "no_coverage"
    with pytest.raises(CutoutInvalid) as e:
        read_cutout(b"<html>rate limited</html>", 64)
    assert e.value.reason == "not_fits"


def test_concurrency_never_exceeds_the_limit(lens_cubes, tmp_path):
    slow = CutoutServer(delay_s=0.1)
    try:
        pos = positions(9)
        for i, (ra, dec) in enumerate(pos[["ra_deg", "dec_deg"]].to_numpy()):
            slow.add(ra, dec, lens_cubes[i % 6])
        res = fetch_cutouts(pos, tmp_path, SPEC, cfg=config(slow, max_concurrency=2), progress=False)
        assert res.n_usable == 9 and slow.max_in_flight == 2
    finally:
        slow.close()


def test_unreachable_service_is_detected_fast_and_nothing_else_is_requested(tmp_path):
    res = fetch_cutouts(positions(20), tmp_path, SPEC, cfg=config(None, max_attempts=3), progress=False)  # closed port
    # fast: the only waiting is the first row's backoff schedule (0.01 + 0.02 s); no other row waits or asks
    assert res.rows["backoff_s"].iloc[0] == pytest.approx(0.01 + 0.02) and (res.rows["backoff_s"].iloc[1:] == 0).all()
    assert res.status == "offline" and res.offline and res.requests == 3  # the first row's attempts, nothing more
    assert res.rows.iloc[0]["reason"] == "connection_refused"
    assert (res.rows["reason"].iloc[1:] == "offline").all() and (res.rows["status"].iloc[1:] == "skipped").all()
    assert "unreachable" in res.messages[0]


def test_unresolvable_host_is_not_retried(tmp_path):
    cfg = FetchConfig.from_params({"url_template": "http://dhs-no-such-host.invalid/cutout.fits?ra={ra}&dec={dec}", **FAST},
                                  max_backoff_s=0.05)
    res = fetch_cutouts(positions(5), tmp_path, SPEC, cfg=cfg, progress=False)
    assert res.status == "offline" and res.requests == 1 and res.rows.iloc[0]["reason"] == "unresolvable"
    assert (res.rows["backoff_s"] == 0).all() and res.rows.iloc[0]["attempts"] == 1  # no retry, no wait


def test_offline_with_part_of_the_set_cached_is_partial(server, lens_cubes, tmp_path):
    pos = positions(3)
    server.add(150.0, 2.0, lens_cubes[0])
    fetch_cutouts(pos.head(1), tmp_path, SPEC, cfg=config(server), progress=False)
    res = fetch_cutouts(pos, tmp_path, SPEC, cfg=config(None), progress=False)
    assert res.status == "partial" and list(res.rows["status"]) == ["cached", "failed", "skipped"]


def test_local_directory_of_fits_cutouts_is_accepted(lens_cubes, tmp_path):
    src = tmp_path / "mine"
    src.mkdir()
    (src / "LENS-0.fits").write_bytes(cutout_bytes(lens_cubes[0]))                          # by name
    (src / Path(cache_relpath(150.01, 2.01, SPEC)).name).write_bytes(cutout_bytes(lens_cubes[1]))  # by position
    (src / "LENS-2.fits").write_bytes(cutout_bytes(lens_cubes[2][:, :32, :32]))             # wrong size
    res = fetch_cutouts(positions(4), tmp_path / "cache", SPEC, source=str(src), progress=False)
    assert list(res.rows["status"]) == ["local", "local", "failed", "failed"]
    assert list(res.rows["reason"]) == ["", "", "bad_shape", "not_in_local_dir"] and res.requests == 0
    np.testing.assert_array_equal(load_cutouts(positions(2), tmp_path / "cache", SPEC).images_nmgy, lens_cubes[:2])
    # the directory is the authority on every run: a replaced cutout replaces the cached copy, and a
    # removed one is not served from the cache (another experiment's cutouts never come back silently)
    (src / "LENS-0.fits").write_bytes(cutout_bytes(lens_cubes[3]))
    (src / Path(cache_relpath(150.01, 2.01, SPEC)).name).unlink()
    res = fetch_cutouts(positions(2), tmp_path / "cache", SPEC, source=str(src), progress=False)
    assert list(res.rows["status"]) == ["local", "failed"] and list(res.rows["reason"]) == ["", "not_in_local_dir"]
    np.testing.assert_array_equal(load_cutouts(positions(1), tmp_path / "cache", SPEC).images_nmgy, lens_cubes[3:4])


def test_damaged_misordered_and_oversized_cutout_files_are_counted_rejections(lens_cubes, tmp_path, monkeypatch):
    """A local directory of FITS cutouts: a valid image followed by a truncated HDU, a cube whose
    header says zrg, and a file above the size cap are each one named, counted rejection; the
    other lenses are used."""
    import dhs.cutouts.fits as fits_mod

    src = tmp_path / "mine"
    src.mkdir()
    full = cutout_bytes(lens_cubes[0], invvar=np.ones_like(lens_cubes[0]))
    (src / "LENS-0.fits").write_bytes(full[: len(full) - 2880 * 10])          # the invvar HDU cut short
    (src / "LENS-1.fits").write_bytes(cutout_bytes(lens_cubes[1], header={"BANDS": "zrg"}))
    (src / "LENS-2.fits").write_bytes(cutout_bytes(lens_cubes[2]) + b"\0" * (2880 * 40))   # padded past a small cap
    (src / "LENS-3.fits").write_bytes(cutout_bytes(lens_cubes[3]))
    monkeypatch.setattr(fits_mod, "MAX_FILE_BYTES", len(cutout_bytes(lens_cubes[3])) + 2880 * 20)
    with pytest.raises(CutoutInvalid, match="not a readable FITS file") as e:
        read_cutout(src / "LENS-0.fits", 64)
    assert e.value.reason == "not_fits"
    with pytest.raises(CutoutInvalid, match="the file says its bands are 'zrg', not 'grz'") as e:
        read_cutout(src / "LENS-1.fits", 64)
    assert e.value.reason == "bad_bands"
    res = fetch_cutouts(positions(4), tmp_path / "cache", SPEC, source=str(src), progress=False)
    assert list(res.rows["reason"]) == ["not_fits", "bad_bands", "too_large", ""]
    assert list(res.rows["status"]) == ["failed", "failed", "failed", "local"]


def test_a_lens_name_never_reads_a_file_outside_the_local_directory(lens_cubes, tmp_path):
    """A catalogue name is part of a path (``<name>.fits``): a name climbing out of the directory,
    or a link out of it, is not read; the lens is counted as not_in_local_dir."""
    src = tmp_path / "mine"
    (tmp_path / "outside").mkdir()
    src.mkdir()
    (tmp_path / "outside" / "evil.fits").write_bytes(cutout_bytes(lens_cubes[0]))
    (src / "LENS-1.fits").symlink_to(tmp_path / "outside" / "evil.fits")
    pos = positions(2)
    pos.loc[0, "name"] = "../outside/evil"
    res = fetch_cutouts(pos, tmp_path / "cache", SPEC, source=str(src), progress=False)
    assert list(res.rows["status"]) == ["failed", "failed"]
    assert list(res.rows["reason"]) == ["not_in_local_dir", "not_in_local_dir"] and res.requests == 0


def test_redirects_are_followed_on_the_same_host_only_bounded_and_counted(server, lens_cubes, tmp_path):
    """A redirect on the service's own host is followed (and counted); one to another host is not
    followed; a loop stops after a few hops instead of hundreds of requests."""
    pos = positions(3)
    for i, what in enumerate(("redirect_once", "redirect_offsite", "redirect_loop")):
        server.add(150.0 + 0.01 * i, 2.0 + 0.01 * i, lens_cubes[i], behaviour=what)
    res = fetch_cutouts(pos, tmp_path, SPEC, cfg=config(server), progress=False)
    assert list(res.rows["status"]) == ["fetched", "failed", "failed"]
    assert list(res.rows["reason"]) == ["", "redirect_offsite", "redirect_loop"]
    assert "127.0.0.2" in res.rows["message"].iloc[1]
    assert res.requests == len(server.requests) == 2 + 1 + 4   # every request sent is counted; the loop stops at 3 hops
    again = fetch_cutouts(pos, tmp_path, SPEC, cfg=config(server), progress=False,
                          remembered=remembered_failures(write_manifest(res, ["confirmed"] * 3, tmp_path)))
    assert again.requests == 0   # cached, and the redirect failures are remembered


# --------------------------------------------------------------------------- recall arithmetic

def test_recall_at_thresholds_with_wilson_by_grade_and_theta_e():
    table = pd.DataFrame({
        "grade": ["confirmed"] * 4 + ["confident"] * 3 + ["probable"] * 3,
        "theta_e_arcsec": [0.8, 1.1, 1.3, 1.7] + [np.nan] * 6,
        "score": [0.9, 0.5, 0.95, 0.2, 0.99, 0.5, 0.6, 0.1, 0.7, 0.51],
        "probability": [0.4, 0.2, 0.8, 0.1, 0.9, 0.3, 0.35, 0.05, 0.5, 0.31]})
    out = recall_by_group(table, [RecallPoint("fpr_0.01", "score", 0.5), RecallPoint("p_0.3", "probability", 0.3)],
                          GRADES, [0.5, 1.0, 1.25, 1.5, 2.0])
    s = out["fpr_0.01"]
    # a score equal to the threshold is missed (pass: score > threshold)
    assert (s["all"]["k"], s["all"]["n"]) == (6, 10) and s["all"]["recall"] == pytest.approx(0.6)
    lo, hi = wilson_interval(6, 10)
    assert s["all"]["wilson_low"] == pytest.approx(float(lo)) and s["all"]["wilson_high"] == pytest.approx(float(hi))
    assert s["all"]["small_n"] is True
    assert (s["grade=confirmed"]["k"], s["grade=confirmed"]["n"]) == (2, 4)
    assert (s["grade=confident"]["k"], s["grade=confident"]["n"]) == (2, 3)
    assert (s["grade=probable"]["k"], s["grade=probable"]["n"]) == (2, 3)
    assert (s["theta_e_arcsec=[0.5,1)"]["k"], s["theta_e_arcsec=[0.5,1)"]["n"]) == (1, 1)
    assert (s["theta_e_arcsec=[1,1.25)"]["k"], s["theta_e_arcsec=[1,1.25)"]["n"]) == (0, 1)
    assert (s["theta_e_arcsec=[1.5,2)"]["k"], s["theta_e_arcsec=[1.5,2)"]["n"]) == (0, 1)
    assert (s["theta_e_arcsec=unknown"]["k"], s["theta_e_arcsec=unknown"]["n"]) == (4, 6)
    p = out["p_0.3"]
    assert (p["all"]["k"], p["grade=probable"]["k"]) == (6, 2)  # 0.3 itself misses, 0.31 passes
    empty = recall_by_group(table[table["grade"] == "confirmed"], [RecallPoint("t", "score", 0.5)], GRADES, [0.5, 2.0])
    assert empty["t"]["grade=probable"] == {"n": 0, "k": 0, "recall": None, "wilson_low": None, "wilson_high": None, "small_n": True}
    assert recall_entry(60, 60)["small_n"] is False and recall_entry(60, 60)["wilson_high"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="non-finite"):
        recall_by_group(table.assign(score=np.nan), [RecallPoint("t", "score", 0.5)], GRADES, [0.5, 2.0])


def test_operating_points_come_from_the_completeness_file_or_fail_clearly(tmp_path):
    with pytest.raises(OperatingPointError, match="run `dvc repro completeness`"):
        load_score_thresholds(tmp_path / "none.json")
    (tmp_path / "c.json").write_text(json.dumps({"thresholds": []}))
    with pytest.raises(OperatingPointError, match="no non-empty 'thresholds'"):
        load_score_thresholds(tmp_path / "c.json")
    (tmp_path / "c.json").write_text(json.dumps({"plot_threshold": "fpr_0.01", "thresholds": [
        {"name": "fpr_0.01", "target_fpr": 0.01, "score": 0.93, "n_controls": 5000, "n_controls_above": 50, "achieved_fpr": 0.01, "low_count": False},
        {"name": "score_0.5", "target_fpr": None, "score": 0.5, "n_controls": 5000, "n_controls_above": 200, "achieved_fpr": 0.04, "low_count": False}]}))
    points, info, highlight = load_score_thresholds(tmp_path / "c.json")
    assert highlight == "fpr_0.01"
    assert points == [RecallPoint("fpr_0.01", "score", 0.93), RecallPoint("score_0.5", "score", 0.5)]
    assert info["fpr_0.01"]["kind"] == "fpr" and info["score_0.5"]["kind"] == "fixed_score"
    assert [p.name for p in probability_points([0.3, 0.5])[0]] == ["p_0.3", "p_0.5"]
    with pytest.raises(OperatingPointError, match=r"in \(0, 1\)"):
        probability_points([1.5])


# --------------------------------------------------------------------------- the stages

def _write_inputs(tmp_path: Path, server: CutoutServer | None, lens_cubes, **section) -> dict:
    """A catalogue of the simulated lenses, params with a known_lenses section, a small_cnn
    checkpoint, completeness thresholds and a calibrator: everything the stages read."""
    import torch

    from dhs.evaluation.calibrator import Calibrator, save_calibrator
    from dhs.models.loader import NormConfig
    from dhs.models.registry import build_model
    from dhs.models.spec import ModelSpec
    from dhs.models.checkpoint import save_checkpoint

    pos = positions(6)
    cat = pos.assign(theta_e_arcsec=[0.9, 1.1, 1.3, 1.6, np.nan, np.nan], z_lens=0.3, z_source=np.nan,
                     grade=["confirmed"] * 4 + ["confident", "probable"], source=["SLACS"] * 4 + ["lenscat", "DESI"],
                     reference="test", also_in="")
    write_catalog(cat, tmp_path / "cat.csv", ["test catalogue"])
    if server is not None:
        for (ra, dec), cube in zip(pos[["ra_deg", "dec_deg"]].to_numpy(), lens_cubes):
            server.add(ra, dec, cube)
    params = yaml.safe_load(open(REPO / "params.yaml"))
    params["known_lenses"] = {"catalog": str(tmp_path / "cat.csv"), "source": "legacysurvey",
                              "url_template": server.template if server else f"http://127.0.0.1:{free_port()}/c.fits?ra={{ra}}&dec={{dec}}",
                              "max_attempts": 2, "backoff_s": 0.01, "connect_timeout_s": 1, "prob_thresholds": [0.3, 0.5, 0.9],
                              "theta_e_bins_arcsec": [0.5, 1.0, 1.5, 2.0], "gallery_max": 4, "device": "cpu", **section}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    torch.manual_seed(0)
    spec = ModelSpec("small_cnn", 64)
    (tmp_path / "models" / "small_cnn").mkdir(parents=True)
    save_checkpoint(tmp_path / "models" / "small_cnn" / "checkpoint_best.pt", build_model(spec).eval(), None, 1, spec, "test",
                    {"norm": json.dumps(dataclasses.asdict(NormConfig.from_params({})))})
    (tmp_path / "completeness.json").write_text(json.dumps({"plot_threshold": "fpr_0.01", "thresholds": [
        {"name": "fpr_0.1", "target_fpr": 0.1, "score": 0.2, "n_controls": 1000, "n_controls_above": 100, "achieved_fpr": 0.1, "low_count": False},
        {"name": "fpr_0.01", "target_fpr": 0.01, "score": 0.6, "n_controls": 1000, "n_controls_above": 10, "achieved_fpr": 0.01, "low_count": False}]}))
    save_calibrator(tmp_path / "calibrator.json", Calibrator(method="temperature", temperature=2.0, pi_train=0.5, checkpoint="x",
                                                             checkpoint_sha256="", fit_split="val", n_fit=100))
    return {"params_path": str(tmp_path / "params.yaml")}


def _stage_args(tmp_path: Path) -> list[str]:
    return ["--arch", "small_cnn", "--params", str(tmp_path / "params.yaml"), "--cutouts", str(tmp_path / "cutouts"),
            "--models", str(tmp_path / "models"), "--thresholds", str(tmp_path / "completeness.json"),
            "--calibrator", str(tmp_path / "calibrator.json"), "--metrics", str(tmp_path / "m"), "--plots", str(tmp_path / "p")]


def _cutout_args(tmp_path: Path) -> list[str]:
    return ["--params", str(tmp_path / "params.yaml"), "--out", str(tmp_path / "cutouts"), "--metrics",
            str(tmp_path / "cutouts.json"), "--no-progress"]


def test_stages_fetch_then_score_and_report_recall_consistent_with_the_scores(server, lens_cubes, tmp_path):
    from stages import cutouts as cutouts_stage
    from stages import known_lenses as kl_stage

    _write_inputs(tmp_path, server, lens_cubes)
    server.behaviour[("150.05000", "2.05000")] = "404"  # the DESI candidate has no cutout
    assert cutouts_stage.main(_cutout_args(tmp_path)) == 0
    fetched = json.loads((tmp_path / "cutouts.json").read_text())
    assert fetched["status"] == "ok" and fetched["usable"] == 5 and fetched["not_usable_by_reason"] == {"http_404": 1}
    manifest = (tmp_path / "cutouts" / "manifest.csv").read_bytes()
    n_requests = len(server.requests)
    assert cutouts_stage.main(_cutout_args(tmp_path)) == 0  # a rerun: everything cached, the 404 remembered
    again = json.loads((tmp_path / "cutouts.json").read_text())
    assert again["status"] == "ok" and again["by_status"] == {"cached": 5, "failed": 1} and again["requests"] == 0
    assert len(server.requests) == n_requests
    server.close()  # the same params on a machine without the service: nothing to ask, nothing changes
    assert cutouts_stage.main(_cutout_args(tmp_path)) == 0
    assert json.loads((tmp_path / "cutouts.json").read_text())["status"] == "ok"  # reproducible offline once fetched
    assert (tmp_path / "cutouts" / "manifest.csv").read_bytes() == manifest  # same content: DVC sees no change
    # another url_template is another request: the 404 remembered for the old URL is asked again
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["known_lenses"]["url_template"] = f"http://127.0.0.1:{free_port()}/c.fits?ra={{ra}}&dec={{dec}}"  # offline
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert cutouts_stage.main(_cutout_args(tmp_path)) == 0
    other = json.loads((tmp_path / "cutouts.json").read_text())
    assert other["status"] == "partial" and other["requests"] >= 1 and other["not_usable_by_reason"] == {"connection_refused": 1}
    (tmp_path / "cutouts" / "manifest.csv").write_bytes(manifest)  # back to what the first run recorded, for the scoring
    assert kl_stage.main(_stage_args(tmp_path)) == 0
    m = json.loads((tmp_path / "m" / "small_cnn.json").read_text())
    assert m["status"] == "ok" and m["cutouts"]["scored"] == 5 and m["cutouts"]["not_scored_by_reason"] == {"http_404": 1}
    table = pd.read_csv(tmp_path / "p" / "small_cnn.csv")
    assert len(table) == 6 and table.loc[table["name"] == "LENS-5", "cutout"].item() == "http_404"
    ok = table[table["cutout"] == "ok"]
    np.testing.assert_allclose(ok["score"], 1 / (1 + np.exp(-ok["logit"])))
    np.testing.assert_allclose(ok["probability"], 1 / (1 + np.exp(-ok["logit"] / 2.0)))  # the calibrator's temperature
    assert set(m["recall"]) == {"fpr_0.1", "fpr_0.01", "p_0.3", "p_0.5", "p_0.9"}
    for name, col, t in (("fpr_0.01", "score", 0.6), ("p_0.5", "probability", 0.5)):
        assert m["recall"][name]["all"]["k"] == int((ok[col] > t).sum()) and m["recall"][name]["all"]["n"] == 5
        assert m["recall"][name]["grade=confirmed"]["n"] == 4 and m["recall"][name]["grade=probable"]["n"] == 0
        assert m["recall"][name]["theta_e_arcsec=[1,1.5)"]["n"] == 2 and m["recall"][name]["theta_e_arcsec=unknown"]["n"] == 1
        assert list(ok[f"pass_{name}"]) == list(ok[col] > t)
    png = (tmp_path / "p" / "small_cnn_gallery.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # the scores are the model's on the cached nMgy cubes with the training normalisation
    from dhs.models.checkpoint import load_trained
    from dhs.models.inference import score_images

    tm = load_trained(tmp_path / "models" / "small_cnn", "cpu")
    np.testing.assert_allclose(ok["logit"], score_images(tm, lens_cubes[:5]), rtol=1e-5, atol=1e-6)


def test_offline_stages_finish_fast_with_status_offline_and_no_recall(tmp_path, lens_cubes, capsys):
    from stages import cutouts as cutouts_stage
    from stages import known_lenses as kl_stage

    _write_inputs(tmp_path, None, lens_cubes)
    assert cutouts_stage.main(_cutout_args(tmp_path)) == 0
    assert kl_stage.main(_stage_args(tmp_path)) == 0
    err = capsys.readouterr().err
    assert "KNOWN-LENS CUTOUTS OFFLINE" in err and "KNOWN-LENS RECALL NOT MEASURED" in err
    fetched = json.loads((tmp_path / "cutouts.json").read_text())
    assert fetched["status"] == "offline" and fetched["usable"] == 0 and fetched["by_status"] == {"failed": 1, "skipped": 5}
    assert fetched["requests"] <= 4  # fast offline: the first row's attempts at most, nothing else asked
    m = json.loads((tmp_path / "m" / "small_cnn.json").read_text())
    assert m["status"] == "offline" and m["recall"] is None and m["cutouts"]["scored"] == 0
    assert m["cutouts"]["not_scored_by_reason"] == {"connection_refused": 1, "offline": 5}
    assert (tmp_path / "p" / "small_cnn_gallery.png").exists() and len(pd.read_csv(tmp_path / "p" / "small_cnn.csv")) == 6
    # every later run with the same outcome (the stage always runs) says it in one line, not the banner again
    assert cutouts_stage.main(_cutout_args(tmp_path)) == 0
    err = capsys.readouterr().err
    assert "KNOWN-LENS CUTOUTS" not in err and "cutouts: offline, as on the last run: 6 of 6 lenses without a cutout" in err
    assert len(err.strip().splitlines()) == 1, err


def test_require_true_makes_offline_an_error(tmp_path, lens_cubes, capsys):
    from stages import cutouts as cutouts_stage
    from stages import known_lenses as kl_stage

    _write_inputs(tmp_path, None, lens_cubes, require=True)
    assert cutouts_stage.main(_cutout_args(tmp_path)) == 2
    assert kl_stage.main(_stage_args(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "cutouts: FAILED: known_lenses.require is true but no lens has a cutout" in err
    assert "known_lenses small_cnn: FAILED: known_lenses.require is true" in err


def test_missing_thresholds_and_bad_params_fail_with_a_clear_message(tmp_path, lens_cubes, capsys):
    from dhs.known_lenses.config import KnownLensConfig
    from stages import known_lenses as kl_stage

    _write_inputs(tmp_path, None, lens_cubes)
    (tmp_path / "completeness.json").unlink()
    assert kl_stage.main(_stage_args(tmp_path)) == 2
    assert "run `dvc repro completeness` first" in capsys.readouterr().err
    for bad, msg in (({"max_concurrency": 50}, "max_concurrency must be in"), ({"bogus": 1}, "unknown keys"),
                     ({"require": "yes"}, "require must be true or false"), ({"grades": ["A"]}, "grades must be"),
                     ({"url_template": "ftp://x"}, "url_template must be")):
        with pytest.raises(ParamsError, match=msg):
            KnownLensConfig.from_params(bad)
