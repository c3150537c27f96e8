"""The cutout client against a hand-written HTTP server on loopback that drips, lies, truncates
and recovers: every run ends within its deadlines, with each row counted as transient (asked
again next run) or permanent (remembered for that URL only), and a degraded run says so."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import numpy as np
import pandas as pd
import pytest
import yaml

from dhs.cutouts.fits import cutout_bytes
from dhs.cutouts.client import (CutoutSpec, FetchConfig, fetch_cutouts, load_cutouts, read_manifest, remembered_failures,
                                      write_manifest)
from tests.conftest import REPO

SPEC = CutoutSpec(size_px=64)
FAST = dict(connect_timeout_s=1.0, read_timeout_s=5.0, backoff_s=0.01)   # known_lenses keys: short timeouts and backoff


def fetch_config(**keys) -> FetchConfig:
    """A fetch config from known_lenses keys (``FAST`` unless given, the others at the schema's
    defaults), each backoff capped at 0.05 s."""
    return FetchConfig.from_params({**FAST, **keys}, max_backoff_s=0.05)


def cube(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:64, :64] - 31.5
    return (np.exp(-(x**2 + y**2) / 18.0) + rng.normal(0, 0.01, (3, 64, 64))).astype(np.float32)


def positions(n: int) -> pd.DataFrame:
    return pd.DataFrame({"name": [f"L{i}" for i in range(n)], "ra_deg": 150.0 + 0.01 * np.arange(n), "dec_deg": 2.0 + 0.01 * np.arange(n)})


class FaultyServer:
    """cutout.fits on 127.0.0.1 with a behaviour per position (``ok``, ``drip``: headers at once
    then ``rate`` bytes/s; ``drip_headers``: the status line and headers a byte at a time;
    ``html``: 200 with an error page; ``garbage``: 200 with bytes that are not FITS;
    ``truncated``: 200 with part of the file and an honest Content-Length; ``404``), for the
    first ``bad_for`` requests of that position (then ``ok``: the service recovers)."""

    def __init__(self, rate: int = 200):
        self.rate = rate
        self.plan: dict[tuple[str, str], tuple[str, int]] = {}
        self.bodies: dict[tuple[str, str], bytes] = {}
        self.requests: list[tuple[str, str, str]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                u = urlparse(self.path)
                q = {k: v[0] for k, v in parse_qs(u.query).items()}
                key = (q.get("ra"), q.get("dec"))
                with server.lock:
                    server.requests.append((*key, q.get("layer", "")))
                    n = sum(1 for r in server.requests if r[:2] == key)
                what, bad_for = server.plan.get(key, ("404", 10**9))
                if n > bad_for:
                    what = "ok"
                body = server.bodies.get(key, b"")
                try:
                    if what == "404" or not body:
                        return self._send(404, b"not found", "text/plain")
                    if what == "ok":
                        return self._send(200, body, "application/fits")
                    if what == "html":
                        return self._send(200, b"<html><body>Too many requests, slow down</body></html>", "text/html")
                    if what == "garbage":
                        return self._send(200, bytes(np.random.default_rng(n).integers(0, 256, 2 * 2880, dtype=np.uint8)),
                                          "application/fits")
                    if what == "truncated":
                        return self._send(200, body[: len(body) // 2], "application/fits")
                    if what == "drip":
                        self.send_response(200)
                        self.send_header("Content-Type", "application/fits")
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        step = max(1, server.rate // 10)
                        for i in range(0, len(body), step):
                            if server.stop.is_set():
                                return
                            self.wfile.write(body[i : i + step])
                            self.wfile.flush()
                            time.sleep(0.1)
                        return
                    if what == "drip_headers":
                        head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/fits\r\nX-Pad: {'x' * 400}\r\n"
                                f"Content-Length: {len(body)}\r\n\r\n").encode()
                        for b in head:
                            if server.stop.is_set():
                                return
                            self.wfile.write(bytes([b]))
                            self.wfile.flush()
                            time.sleep(0.05)
                        self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    return  # the client hung up: what a deadline does

            def _send(self, code, body, ctype):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def template(self, path: str = "cutout.fits") -> str:
        return (f"http://127.0.0.1:{self.httpd.server_address[1]}/{path}?ra={{ra}}&dec={{dec}}&layer={{layer}}"
                f"&pixscale={{pixscale}}&size={{size}}&bands={{bands}}")

    def add(self, i: int, what: str = "ok", bad_for: int = 10**9) -> None:
        key = (f"{150.0 + 0.01 * i:.5f}", f"{2.0 + 0.01 * i:.5f}")
        self.bodies[key] = cutout_bytes(cube(i))
        self.plan[key] = (what, bad_for)

    def count(self, i: int) -> int:
        key = (f"{150.0 + 0.01 * i:.5f}", f"{2.0 + 0.01 * i:.5f}")
        return sum(1 for r in self.requests if r[:2] == key)

    def close(self):
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = FaultyServer()
    yield s
    s.close()


def fetch_bounded(*args, limit_s: float = 120, **kw):
    """fetch_cutouts in a thread: the result, and whether it ended at all within a generous bound
    (the outcome is what is asserted, not how long it took)."""
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("res", fetch_cutouts(*args, **kw)), daemon=True)
    t.start()
    t.join(limit_s)
    assert not t.is_alive(), "the fetch did not end"
    return out["res"]


def test_a_slow_drip_server_is_cut_off_at_the_cutout_deadline(server, tmp_path):
    server.add(0, "drip")       # headers at once, then 200 bytes/s: a 55 kB cutout would take 4.5 minutes
    server.add(1, "ok")
    cfg = fetch_config(url_template=server.template(), cutout_deadline_s=1.5, max_attempts=3)
    res = fetch_bounded(positions(2), tmp_path, SPEC, cfg=cfg, progress=False)
    rows = res.rows.set_index("name")
    assert (rows.loc["L0", "status"], rows.loc["L0", "reason"]) == ("failed", "cutout_deadline")
    assert "cutout_deadline_s=1.5" in rows.loc["L0", "message"] and rows.loc["L1", "status"] == "fetched"
    assert server.count(0) == 1  # the deadline covers every attempt: no retry after it
    assert res.status == "partial" and any("cut off at known_lenses.cutout_deadline_s" in m for m in res.messages)
    assert list(load_cutouts(positions(2), tmp_path, SPEC).usable) == [False, True]  # nothing half-written is cached
    # transient: the next run asks again, and once the service answers properly the cutout arrives
    server.plan[next(iter(server.plan))] = ("drip", 0)
    again = fetch_bounded(positions(2), tmp_path, SPEC, cfg=cfg, progress=False,
                          remembered=remembered_failures(write_manifest(res, ["x", "x"], tmp_path)))
    assert list(again.rows["status"]) == ["fetched", "cached"] and again.status == "ok"


def test_headers_dripped_a_byte_at_a_time_are_cut_off_too(server, tmp_path):
    server.add(0, "drip_headers")
    cfg = fetch_config(url_template=server.template(), cutout_deadline_s=1.0)
    res = fetch_bounded(positions(1), tmp_path, SPEC, cfg=cfg, progress=False)
    assert res.rows.iloc[0]["reason"] == "cutout_deadline" and res.status == "partial"


def test_the_run_deadline_ends_the_run_and_leaves_the_rest_for_the_next(server, tmp_path):
    for i in range(8):
        server.add(i, "drip")
    cfg = fetch_config(url_template=server.template(), cutout_deadline_s=600, run_deadline_s=2.0, max_concurrency=2)
    res = fetch_bounded(positions(8), tmp_path, SPEC, cfg=cfg, progress=False)
    assert set(res.rows["reason"]) == {"run_deadline"} and res.status == "partial"
    assert (res.rows["status"] == "skipped").sum() >= 1 and res.requests < 8
    assert any("run_deadline_s=2 s: 8 row(s) not fetched; rerun to continue" in m for m in res.messages)


@pytest.mark.parametrize("lie", ["html", "garbage", "truncated"])
def test_a_200_that_is_not_a_cutout_is_transient_retried_and_never_remembered(server, tmp_path, lie):
    server.add(0, lie)
    cfg = fetch_config(url_template=server.template(), max_attempts=3)
    res = fetch_bounded(positions(1), tmp_path, SPEC, cfg=cfg, progress=False)
    row = res.rows.iloc[0]
    assert (row["status"], row["reason"], row["attempts"]) == ("failed", "bad_response", 3) and server.count(0) == 3
    assert res.status == "partial" and "HTTP 200" in row["message"]
    manifest = write_manifest(res, ["confirmed"], tmp_path)
    assert remembered_failures(manifest) == {}  # nothing to skip next time
    # the service recovers: the next run asks again and gets it
    server.plan[next(iter(server.plan))] = (lie, 0)
    again = fetch_bounded(positions(1), tmp_path, SPEC, cfg=cfg, progress=False, remembered=remembered_failures(manifest))
    assert again.rows.iloc[0]["status"] == "fetched" and again.status == "ok"


def test_a_server_that_lies_once_then_recovers_is_fetched_in_the_same_run(server, tmp_path):
    server.add(0, "truncated", bad_for=1)
    server.add(1, "html", bad_for=2)
    res = fetch_bounded(positions(2), tmp_path, SPEC, cfg=fetch_config(url_template=server.template(), max_attempts=4),
                        progress=False)
    assert list(res.rows["status"]) == ["fetched", "fetched"] and list(res.rows["attempts"]) == [2, 3]
    np.testing.assert_array_equal(load_cutouts(positions(2), tmp_path, SPEC).images_nmgy[0], cube(0))


def test_permanent_failures_are_remembered_by_url_and_asked_again_when_it_changes(server, tmp_path):
    server.add(1, "ok")          # position 0 is unknown to the server: 404
    cfg = fetch_config(url_template=server.template())
    first = fetch_bounded(positions(2), tmp_path, SPEC, cfg=cfg, progress=False)
    assert list(first.rows["reason"]) == ["http_404", ""] and first.status == "ok"
    known = remembered_failures(write_manifest(first, ["confirmed"] * 2, tmp_path))
    assert list(known) == [first.rows.iloc[0]["url"]]
    n = len(server.requests)
    again = fetch_bounded(positions(2), tmp_path, SPEC, cfg=cfg, progress=False, remembered=known)
    assert len(server.requests) == n and again.requests == 0 and again.rows.iloc[0]["reason"] == "http_404"
    # the service gains the cutout and the template moves (another path, the same host): asked again, found
    server.add(0, "ok")
    moved = fetch_config(url_template=server.template("viewer/cutout.fits"))
    third = fetch_bounded(positions(2), tmp_path, SPEC, cfg=moved, progress=False, remembered=known)
    assert list(third.rows["status"]) == ["fetched", "cached"] and third.requests == 1


def test_the_cutouts_stage_names_its_host_and_bans_a_degraded_run(server, tmp_path, capsys):
    from dhs.known_lenses.catalog import write_catalog
    from stages import cutouts as cutouts_stage

    pos = positions(3)
    write_catalog(pos.assign(theta_e_arcsec=np.nan, z_lens=0.3, z_source=np.nan, grade="confirmed", source="SLACS",
                             reference="test", also_in=""), tmp_path / "cat.csv", ["test"])
    server.add(0, "ok")
    server.add(1, "html")
    server.add(2, "404")
    params = yaml.safe_load(open(REPO / "params.yaml"))
    params["known_lenses"].update(catalog=str(tmp_path / "cat.csv"), url_template=server.template(), max_attempts=2,
                                  backoff_s=0.01, connect_timeout_s=1, read_timeout_s=5, cutout_deadline_s=30)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    args = ["--params", str(tmp_path / "params.yaml"), "--out", str(tmp_path / "cutouts"), "--metrics", str(tmp_path / "m.json"),
            "--no-progress"]
    assert cutouts_stage.main(args) == 0
    out = capsys.readouterr()
    host = f"127.0.0.1:{server.httpd.server_address[1]}"
    assert f"request(s) to {host}" in out.out and "legacysurvey" not in out.out
    err = " ".join(out.err.replace("!", " ").split())  # the banner, unwrapped
    assert "KNOWN-LENS CUTOUTS PARTIAL" in err and "not a FITS cutout" in err and f"reaches {host}" in err
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["status"] == "partial" and m["source"] == host
    assert m["not_usable_by_reason"] == {"bad_response": 1, "http_404": 1}
    manifest = read_manifest(tmp_path / "cutouts")
    assert list(manifest["reason"]) == ["", "bad_response", "http_404"] and manifest["url"].str.startswith("http://").all()
