"""The body of stage ``cutouts``.

A FITS cutout of every selected known lens fetched into data/cutouts, once for all archs
(the cutouts depend on positions, size, layer and pixel scale, not on the model), so the viewer
is asked once and known_lenses@{arch} scores offline from disk. Offline (the viewer unreachable
and nothing cached) is not an error unless known_lenses.require is true: the stage says so
loudly, records ``status: offline`` and exits 0, and known_lenses@{arch} then reports no recall.
"""

from __future__ import annotations

import sys

import pandas as pd

from dhs import headline
from dhs.cutouts.client import LEGACYSURVEY, fetch_cutouts, read_manifest, remembered_failures, write_manifest
from dhs.known_lenses.catalog import read_catalog, select_lenses
from dhs.known_lenses.config import KnownLensConfig
from dhs.known_lenses.run_status import RequireError, banner
from dhs.params import Params, as_params


def run_cutouts(params: str | Params = "params.yaml", cutout_dir: str = "data/cutouts", metrics_path: str = "metrics/cutouts.json",
                progress: bool = True) -> dict:
    p = as_params(params).require("known_lenses")
    cfg = KnownLensConfig.from_params(p["known_lenses"], p.source)
    lenses = select_lenses(read_catalog(cfg.catalog), cfg.grades, cfg.max_lenses)
    previous = read_manifest(cutout_dir)
    known = remembered_failures(previous) if cfg.source == LEGACYSURVEY else {}
    res = fetch_cutouts(lenses[["name", "ra_deg", "dec_deg"]], cutout_dir, cfg.spec, cfg.source, cfg.fetch, progress, known)
    manifest = write_manifest(res, lenses["grade"], cutout_dir)
    host = cfg.fetch.host
    source = host if cfg.source == LEGACYSURVEY else f"local directory {cfg.source}"
    metrics = {"status": res.status, "offline": res.offline, "source": source, "catalog": str(cfg.catalog),
               "grades": list(cfg.grades), "max_lenses": cfg.max_lenses, **res.counts(),
               "usable_by_grade": {g: int(((manifest["grade"] == g) & (manifest["status"] == "ok")).sum())
                                   for g in cfg.grades},
               "spec": {"layer": cfg.spec.layer, "bands": cfg.spec.bands, "pixscale_arcsec": cfg.spec.pixscale_arcsec,
                        "size_px": cfg.spec.size_px},
               "messages": res.messages}  # no timings: the file stays the same when nothing changed
    headline.write("cutouts", metrics_path, metrics)
    c = res.counts()
    print(f"cutouts: {res.status}: {c['usable']} of {c['rows']} lenses have a cutout ({c['by_status']}); "
          f"{c['requests']} request(s) to {source} in {res.elapsed_s:.1f} s -> {cutout_dir}")
    if c["not_usable_by_reason"]:
        print(f"cutouts: without a cutout, by reason: {c['not_usable_by_reason']}")
    if res.status != "ok" and same_outcome(previous, manifest):
        # the banner was printed when this outcome first happened: one line on every later run
        print(f"cutouts: {res.status}, as on the last run: {c['rows'] - c['usable']} of {c['rows']} lenses without a cutout "
              f"(the reasons and how to fetch them are in metrics/cutouts.json)", file=sys.stderr)
    elif res.status != "ok":
        print(banner([f"KNOWN-LENS CUTOUTS {res.status.upper()}: {c['rows'] - c['usable']} of {c['rows']} lenses have no cutout.",
                      *res.messages,
                      "No recall is reported for lenses without a cutout. To fetch, run `dvc repro cutouts` again (fetched "
                      f"cutouts are kept; transient failures are asked again) on a machine that reaches {host} (then "
                      "`dvc push`), or set known_lenses.source to a directory of FITS cutouts."]),
              file=sys.stderr)
    if cfg.require and c["usable"] == 0:
        raise RequireError(f"known_lenses.require is true but no lens has a cutout (status {res.status}; "
                           f"{c['not_usable_by_reason']}); fetch them where the service is reachable or set require: false")
    return metrics


def same_outcome(previous: pd.DataFrame | None, manifest: pd.DataFrame) -> bool:
    """Whether the last run's manifest recorded the same lenses with the same status and reason."""
    cols = ["name", "status", "reason"]
    if previous is None or any(c not in previous.columns for c in cols) or len(previous) != len(manifest):
        return False
    a, b = previous[cols].astype(str).reset_index(drop=True), manifest[cols].astype(str).reset_index(drop=True)
    return bool(a.equals(b))
