"""The bodies of stages ``cutouts`` and ``known_lenses@{arch}``.

cutouts: a FITS cutout of every selected known lens fetched into data/cutouts, once for all archs
(the cutouts depend on positions, size, layer and pixel scale, not on the model), so the viewer
is asked once and known_lenses@{arch} scores offline from disk. Offline (the viewer unreachable
and nothing cached) is not an error unless known_lenses.require is true: the stage says so
loudly, records ``status: offline`` and exits 0, and known_lenses@{arch} then reports no recall.

known_lenses: every usable cutout scored with the trained model and its training normalisation
(dhs.models.inference.score_images); recall (k of n, Wilson 95%) at every completeness threshold
(score > t, from metrics/completeness/{arch}.json) and at every calibrated probability threshold
(p > t), overall, by grade and by theta_E bin where theta_E is known. Without any cutout the
stage reports no recall at all (never one it did not measure), says so loudly and exits 0, or
fails when known_lenses.require is true.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from dhs import atomic, headline
from dhs.evaluation.scores import sigmoid
from dhs.known_lenses.catalog import read_catalog, select_lenses
from dhs.known_lenses.config import KnownLensConfig
from dhs.cutouts.client import (LEGACYSURVEY, UNREACHABLE_REASONS, fetch_cutouts, is_transient, load_cutouts,
                                      read_manifest, remembered_failures, write_manifest)
from dhs.known_lenses.gallery import write_gallery, write_placeholder
from dhs.known_lenses.operating_points import load_probability_map, load_score_thresholds, probability_points
from dhs.known_lenses.recall import recall_by_group, recovered
from dhs.known_lenses.run_status import RequireError, banner
from dhs.known_lenses.scoring import checkpoint_mismatch, score_cutouts, score_table_finder
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


def account(lenses: pd.DataFrame, loaded, cutout_dir: str, grades) -> tuple[pd.DataFrame, dict, bool]:
    """Per-lens table (cutout: ``ok`` or why not), the row accounting, and whether the fetch
    found the service unreachable. A missing file is explained by the reason the fetch recorded
    in the manifest (http_404, offline, ...)."""
    manifest = read_manifest(cutout_dir)
    why = {} if manifest is None else dict(zip(manifest["key"], manifest["reason"]))
    cutout = np.where(loaded.usable, "ok", [(why.get(k) or r) if r == "missing" else r for k, r in zip(loaded.keys, loaded.reason)])
    table = lenses[["name", "ra_deg", "dec_deg", "grade", "source", "theta_e_arcsec", "z_lens"]].copy()
    table["cutout"] = cutout
    not_scored = {k: int(v) for k, v in sorted(table.loc[~loaded.usable, "cutout"].value_counts().items())}
    accounting = {"selected": len(lenses), "scored": int(loaded.usable.sum()), "not_scored_by_reason": not_scored,
                  "selected_by_grade": {g: int((lenses["grade"] == g).sum()) for g in grades},
                  "scored_by_grade": {g: int(((lenses["grade"] == g) & loaded.usable).sum()) for g in grades},
                  "manifest": manifest is not None}
    offline = any(r in ("offline", *UNREACHABLE_REASONS) for r in why.values())
    return table, accounting, offline


def report_unmeasured(arch: str, table: pd.DataFrame, metrics: dict, offline: bool, csv_path: Path, gallery_path: Path,
                      host: str = "the cutout service") -> str:
    """Write the outputs of a run without any cutout (no recall) and say so loudly; the status."""
    status = "offline" if offline else "no_cutouts"
    acc = metrics["cutouts"]
    hint = "" if acc["manifest"] else "; no manifest: run `dvc repro cutouts` first"
    metrics.update(status=status, recall=None,
                   message=f"no known-lens cutout ({', '.join(f'{r}: {n}' for r, n in acc['not_scored_by_reason'].items())}){hint}; "
                           "recall NOT measured")
    for col in ("logit", "score", "probability"):
        table[col] = np.nan
    atomic.write_text(csv_path, table.to_csv(index=False, lineterminator="\n"))
    write_placeholder(gallery_path, f"known_lenses@{arch}: {status}\nno cutouts, recall not measured\n"
                                    f"(fetch with `dvc repro cutouts` where {host} is reachable)")
    print(banner([f"KNOWN-LENS RECALL NOT MEASURED for {arch}: status {status}, 0 of {acc['selected']} lenses have a cutout.",
                  f"Not scored, by reason: {acc['not_scored_by_reason']}{hint}",
                  f"Fetch cutouts with `dvc repro cutouts` on a machine that reaches {host}, then `dvc push`."]),
          file=sys.stderr)
    return status


def run_known_lenses(arch: str, params: str | Params = "params.yaml", cutout_dir: str = "data/cutouts",
                     models_dir: str = "data/models", thresholds_path: str | None = None, calibrator_path: str | None = None,
                     metrics_dir: str = "metrics/known_lenses", plots_dir: str = "plots/known_lenses") -> dict:
    t0 = time.perf_counter()
    p = as_params(params).require("known_lenses")
    cfg = KnownLensConfig.from_params(p["known_lenses"], p.source)
    thresholds_path = thresholds_path or f"metrics/completeness/{arch}.json"
    calibrator_path = calibrator_path or f"data/calibration/{arch}/calibrator.json"
    score_points, threshold_info, highlight = load_score_thresholds(thresholds_path)
    prob_points, prob_info = probability_points(cfg.prob_thresholds)
    calibrator = load_probability_map(calibrator_path)
    lenses = select_lenses(read_catalog(cfg.catalog), cfg.grades, cfg.max_lenses)
    loaded = load_cutouts(lenses, cutout_dir, cfg.spec)
    table, accounting, offline = account(lenses, loaded, cutout_dir, cfg.grades)
    metrics = {"arch": arch, "catalog": str(cfg.catalog), "cutouts": accounting,
               "thresholds": {**threshold_info, **prob_info}, "thresholds_source": str(thresholds_path)}
    csv_path, gallery_path = Path(plots_dir) / f"{arch}.csv", Path(plots_dir) / f"{arch}_gallery.png"

    table_finder = score_table_finder(Path(models_dir) / arch)
    if table_finder:   # said before anything about cutouts: fetching them would not help
        metrics.update(status="not_scorable", recall=None, message=f"{table_finder}; recall NOT measured")
        for col in ("logit", "score", "probability"):
            table[col] = np.nan
        atomic.write_text(csv_path, table.to_csv(index=False, lineterminator="\n"))
        write_placeholder(gallery_path, f"known_lenses@{arch}: not_scorable\n{table_finder}")
        headline.write("known_lenses", Path(metrics_dir) / f"{arch}.json", metrics)
        print(banner([f"KNOWN-LENS RECALL NOT MEASURED for {arch}: {table_finder}"]), file=sys.stderr)
        if cfg.require:
            raise RequireError(f"known_lenses.require is true but {table_finder}")
        return metrics

    if not loaded.usable.any():
        status = report_unmeasured(arch, table, metrics, offline, csv_path, gallery_path, cfg.fetch.host)
        headline.write("known_lenses", Path(metrics_dir) / f"{arch}.json", metrics)
        if cfg.require:
            raise RequireError(f"known_lenses.require is true but no known lens has a cutout (status {status}); "
                               f"recall cannot be measured")
        return metrics

    scored_by, images = score_cutouts(Path(models_dir) / arch, arch, loaded.images_nmgy, cfg.device, cfg.batch_size)
    logits = scored_by.logits
    warnings = [w for w in [checkpoint_mismatch(calibrator, scored_by.checkpoint)] if w]
    for col, values in (("logit", logits), ("score", sigmoid(logits)), ("probability", calibrator.probabilities(logits))):
        table[col] = np.nan
        table.loc[loaded.usable, col] = values
    scored = table[loaded.usable].reset_index(drop=True)
    points = [*score_points, *prob_points]
    recall = recall_by_group(scored, points, cfg.grades, cfg.theta_e_bins_arcsec)
    for p in points:
        table[f"pass_{p.name}"] = pd.array([pd.NA] * len(table), dtype="boolean")
        table.loc[loaded.usable, f"pass_{p.name}"] = recovered(scored[p.column], p.threshold)
    not_scored = accounting["not_scored_by_reason"]
    status = "partial" if any(is_transient(r) or r == "missing" for r in not_scored) else "ok"
    metrics.update(status=status, recall=recall, highlight_threshold=highlight, warnings=warnings,
                   headline={p.name: recall[p.name]["all"]["recall"] for p in points},
                   model={"checkpoint": str(scored_by.checkpoint), "step": scored_by.step, "normalisation": scored_by.normalisation,
                          "stamp_size": scored_by.stamp_size, "device": scored_by.device},
                   probability={"calibrator": str(calibrator_path), "method": getattr(calibrator, "method", None),
                                "pi_train": getattr(calibrator, "pi_train", None),
                                "note": "calibrated at the calibration split's lens fraction, not at survey prevalence"})
    atomic.write_text(csv_path, table.to_csv(index=False, lineterminator="\n"))
    show = np.flatnonzero(loaded.usable)[: cfg.gallery_max]  # the first scored lenses in catalogue order (best grade first)
    g = table.iloc[show]
    write_gallery(gallery_path, images[: len(show)], g["name"].to_numpy(), g["grade"].to_numpy(),
                  g["theta_e_arcsec"].to_numpy(np.float64), g["logit"].to_numpy(np.float64), g["probability"].to_numpy(np.float64),
                  g[f"pass_{highlight}"].to_numpy(dtype=bool, na_value=False),
                  f"known_lenses@{arch}: {len(show)} of {len(scored)} scored lenses; green frame = pass {highlight}")
    headline.write("known_lenses", Path(metrics_dir) / f"{arch}.json", metrics)
    head = ", ".join(f"{n} {r['all']['k']}/{r['all']['n']}" for n, r in recall.items())
    print(f"known_lenses {arch}: {status}: scored {len(scored)} of {len(lenses)} lenses in {time.perf_counter() - t0:.1f} s; "
          f"recall {head}")
    for w in warnings:
        print(f"known_lenses {arch}: WARNING: {w}", file=sys.stderr)
    if status != "ok":
        print(banner([f"KNOWN-LENS RECALL PARTIAL for {arch}: {len(lenses) - len(scored)} of {len(lenses)} lenses have no cutout "
                      f"({not_scored}); the recall covers the scored lenses only."]), file=sys.stderr)
    return metrics
