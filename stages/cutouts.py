"""Stage `cutouts`: fetch a FITS cutout of every selected known lens into data/cutouts, once.

One stage for all archs (the cutouts depend on positions, size, layer and pixel scale, not on
the model), so the viewer is asked once and `known_lenses@{arch}` scores offline from disk.
data/cutouts is a persistent DVC output: a rerun (new catalogue rows, a resumed outage) keeps
what is there and requests only what is missing; `dvc push`/`dvc pull` carry it to machines
without internet.

Writes data/cutouts/<layer>_grz_<pixscale>as_<size>px/*.fits (valid cutouts only),
data/cutouts/manifest.csv (one row per selected lens: status, reason; permanent failures such
as a 404 are remembered there and not requested again: delete it to retry them) and
metrics/cutouts.json (status ok | partial | offline, counts by status and by reason).

Offline (the viewer unreachable and nothing cached) is not an error unless
known_lenses.require is true: the stage says so loudly, records `status: offline` and exits 0,
and known_lenses@{arch} then reports no recall.
"""

from __future__ import annotations

import argparse
import sys

from dhs import atomic
from dhs.known_lenses.catalog import CatalogError, read_catalog, select_lenses
from dhs.known_lenses.config import KnownLensConfig
from dhs.known_lenses.cutouts import (LEGACYSURVEY, CutoutError, fetch_cutouts, read_manifest, remembered_failures,
                                      write_manifest)
from dhs.known_lenses.run_status import RequireError, banner
from dhs.params import ParamsError, load_params, section


def run(params_path: str = "params.yaml", cutout_dir: str = "data/cutouts", metrics_path: str = "metrics/cutouts.json",
        progress: bool = True) -> dict:
    cfg = KnownLensConfig.from_params(section(load_params(params_path), "known_lenses", source=params_path), params_path)
    lenses = select_lenses(read_catalog(cfg.catalog), cfg.grades, cfg.max_lenses)
    known = remembered_failures(read_manifest(cutout_dir), cfg.source)
    res = fetch_cutouts(lenses[["name", "ra_deg", "dec_deg"]], cutout_dir, cfg.spec, cfg.source, cfg.fetch, progress, known)
    manifest = write_manifest(res, lenses["grade"], cutout_dir)
    source = "legacysurvey" if cfg.source == LEGACYSURVEY else f"local directory {cfg.source}"
    metrics = {"status": res.status, "offline": res.offline, "source": source, "catalog": str(cfg.catalog),
               "grades": list(cfg.grades), "max_lenses": cfg.max_lenses, **res.counts(),
               "usable_by_grade": {g: int(((manifest["grade"] == g) & (manifest["status"] == "ok")).sum())
                                   for g in cfg.grades},
               "spec": {"layer": cfg.spec.layer, "bands": cfg.spec.bands, "pixscale_arcsec": cfg.spec.pixscale_arcsec,
                        "size_px": cfg.spec.size_px},
               "messages": res.messages}  # no timings: the file stays the same when nothing changed
    atomic.write_json(metrics_path, metrics)
    c = res.counts()
    print(f"cutouts: {res.status}: {c['usable']} of {c['rows']} lenses have a cutout ({c['by_status']}); "
          f"{c['requests']} request(s) to {source} in {res.elapsed_s:.1f} s -> {cutout_dir}")
    if c["not_usable_by_reason"]:
        print(f"cutouts: without a cutout, by reason: {c['not_usable_by_reason']}")
    if res.status != "ok":
        print(banner([f"KNOWN-LENS CUTOUTS {res.status.upper()}: {c['rows'] - c['usable']} of {c['rows']} lenses have no cutout.",
                      *res.messages,
                      "No recall is reported for lenses without a cutout. To fetch, run `dvc repro cutouts` on a machine "
                      "that reaches legacysurvey.org (then `dvc push`), or set known_lenses.source to a directory of FITS cutouts."]),
              file=sys.stderr)
    if cfg.require and c["usable"] == 0:
        raise RequireError(f"known_lenses.require is true but no lens has a cutout (status {res.status}; "
                           f"{c['not_usable_by_reason']}); fetch them where the service is reachable or set require: false")
    return metrics


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="data/cutouts")
    ap.add_argument("--metrics", default="metrics/cutouts.json")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    try:
        run(args.params, args.out, args.metrics, progress=not args.no_progress)
    except (ParamsError, CatalogError, CutoutError, RequireError) as exc:
        print(f"cutouts: FAILED: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
