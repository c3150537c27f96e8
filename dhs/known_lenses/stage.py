"""The body of stage ``known_lenses@{arch}`` (the cutouts it scores come from stage ``cutouts``,
dhs/known_lenses/fetch.py).

Every usable cutout scored with the trained model and its training normalisation
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
from dhs.cutouts.client import UNREACHABLE_REASONS, is_transient, load_cutouts, read_manifest
from dhs.known_lenses.gallery import write_gallery, write_placeholder
from dhs.known_lenses.operating_points import load_probability_map, load_score_thresholds, probability_points
from dhs.known_lenses.recall import recall_by_group, recovered
from dhs.known_lenses.run_status import RequireError, banner
from dhs.known_lenses.scoring import checkpoint_mismatch, score_cutouts, score_table_finder
from dhs.params import Params, as_params


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
