"""The body of stage ``selection@{arch}``: the finder's selection function as a model and a file.

For each operating point of ``evaluation.fprs`` (the thresholds the completeness stage set on the
evaluation split's controls), a monotone additive logistic model of P(score > threshold | x)
(``dhs.selection.fit``) is fitted on the measurement injections of a random ``1 -
holdout_fraction`` of the evaluation split's sky regions, with a band from refits over region-
bootstrap replicates; the other regions' injections validate it (``dhs.selection.validate``).
Writes data/selection/{arch}.json (the selection-function file, ``dhs.selection.function``),
metrics/selection/{arch}.json (validation, accounting; headline beside it), plots/selection/
{arch}/{var}.csv (the model's bin means with their band beside the binned observed completeness,
declared as DVC plots) and their figures.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from dhs import atomic, headline
from dhs.errors import StageError
from dhs.evaluation.intervals import bootstrap_multiplicities, wilson_interval
from dhs.evaluation.scores import check_scores, sigmoid
from dhs.params import Params, as_params
from dhs.params.views import view
from dhs.selection import function as sf
from dhs.selection.inputs import selection_inputs
from dhs.selection.fit import Design, FitConfig, design_for, fit_operating_point, in_range, operating_point_doc, term_ranges
from dhs.selection.validate import bin_predictions, predictive_draws, region_dispersion, validate


class SelectionError(StageError, ValueError):
    pass


MIN_FIT = 10     # fewer fit injections: no model
FEW_FIT = 200    # fewer: a model, marked indicative
VALIDATION_SURFACE = ("theta_e_arcsec", "psf_fwhm_r_arcsec")


@dataclass(frozen=True)
class SelectionConfig:
    """A view of the ``selection`` section of params.yaml (each key, its default and its check in
    dhs.params.schema); ``fit`` is not a key: the fit's keys of the same section with
    ``completeness.confidence`` (``FitConfig``)."""
    SECTION: ClassVar[str] = "selection"
    holdout_fraction: float
    fit: FitConfig
    n_validation_bins: int
    min_bin_n: int
    n_draws: int
    seed: int

    @classmethod
    def from_params(cls, p: Mapping[str, Any] | None, source: str = "params.yaml", *, confidence: float) -> "SelectionConfig":
        return view(cls, p, source, fit=FitConfig.from_params(p, source, confidence=confidence))


def _frac(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def split_regions(regions: np.ndarray, holdout_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit regions, held-out regions): a seeded random ``holdout_fraction`` of the regions held
    out, at least one region on each side."""
    regions = np.sort(np.unique(regions))
    if regions.size < 2:
        raise SelectionError(f"{regions.size} sky region(s) in the evaluation split; the selection model needs >= 2 "
                             "(one to fit, one to validate)")
    perm = np.random.default_rng([seed, 0x5E1]).permutation(regions)
    n_hold = int(np.clip(round(holdout_fraction * regions.size), 1, regions.size - 1))
    return np.sort(perm[n_hold:]), np.sort(perm[:n_hold])


def file_sha256(path: Path) -> str | None:
    return atomic.file_sha256(path) if Path(path).exists() else None


def code_version() -> dict[str, Any]:
    """The git commit of the checkout (None outside a git work tree) and a digest of the code
    that fits and evaluates the model."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    h = hashlib.sha256()
    for p in sorted((root / "dhs" / "selection").glob("*.py")):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return {"git_commit": commit, "dhs_selection_sha256": h.hexdigest()}


def load_completeness(path: Path, eval_split: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(the FPR thresholds, the whole metrics document) of the completeness stage."""
    if not path.exists():
        raise SelectionError(f"{path}: no completeness metrics; run the completeness stage first (dvc repro completeness)")
    m = json.loads(path.read_text())
    if m.get("eval_split") != eval_split:
        raise SelectionError(f"{path}: thresholds were set on split {m.get('eval_split')!r}, completeness.eval_split is {eval_split!r}")
    out = [t for t in m.get("thresholds", []) if t.get("target_fpr") is not None]
    if not out:
        raise SelectionError(f"{path}: no FPR thresholds under 'thresholds'")
    return out, m


def _injection_frame(scores: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, np.ndarray], dict[str, int]]:
    """The evaluation split's injections with finite inputs, their inputs, and the rejected counts."""
    inputs = selection_inputs(scores)
    finite = np.ones(len(scores), bool)
    rejected = {}
    for k, v in inputs.items():
        bad = ~np.isfinite(v)
        n = int((bad & finite).sum())
        if n:
            rejected[f"{k}_not_finite"] = n
        finite &= ~bad
    return scores[finite].reset_index(drop=True), {k: v[finite] for k, v in inputs.items()}, rejected


@dataclass
class _Table:
    """The evaluation split of the score table at ``path``: its rows (``ev``), controls, the
    injections with finite inputs (``inj``) and their inputs (``x``), the split's sorted sky
    regions, and the row accounting so far."""
    path: Path
    ev: pd.DataFrame
    ctl: pd.DataFrame
    inj: pd.DataFrame
    x: dict[str, np.ndarray]
    regions: np.ndarray
    rows: dict[str, Any]


def read_table(arch: str, scores_dir: str, eval_split: str) -> _Table:
    """The score table of ``arch`` restricted to ``eval_split``; refuses a missing table and rows
    of the split without a region_id."""
    scores_path = Path(scores_dir) / f"{arch}.parquet"
    if not scores_path.exists():
        raise SelectionError(f"{scores_path}: no score table; run the infer stage first (dvc repro infer@{arch})")
    scores = check_scores(pd.read_parquet(scores_path), need=("src_r_mag",), source=str(scores_path))
    rows = {"read": int(len(scores))}
    ev = scores[scores["split"] == eval_split]
    rows["other_split"] = int(len(scores) - len(ev))
    ctl = ev[ev["label"] == 0]
    inj_all = ev[ev["label"] == 1]
    rows["controls"] = int(len(ctl))
    rows["injections"] = int(len(inj_all))
    if ev["region_id"].isna().any():
        raise SelectionError(f"{scores_path}: {int(ev['region_id'].isna().sum())} row(s) of split {eval_split} without a "
                             f"region_id; the fit/held-out split and the region bootstrap need one per stamp")
    inj, x, rejected = _injection_frame(inj_all)
    rows["injections_rejected"] = rejected
    regions = np.sort(ev["region_id"].astype(np.int64).unique())
    return _Table(scores_path, ev, ctl, inj, x, regions, rows)


@dataclass
class _FitSetup:
    """What every operating point's fit and validation share: the fit and held-out regions, the
    injections' terms, which injections are fitted (``is_fit``), inside the fit's range
    (``inside``) and held out inside it (``hold``), the design and its bases on those three sets,
    the region-bootstrap multiplicities, and the controls' scores and region indices."""
    fit_regions: np.ndarray
    hold_regions: np.ndarray
    inj_region: np.ndarray
    inj_rindex: np.ndarray
    is_fit: np.ndarray
    t_all: dict[str, np.ndarray]
    design: Design
    input_range: dict[str, tuple[float, float]]
    trange: dict[str, tuple[float, float]]
    inside: np.ndarray
    hold: np.ndarray
    B_fit: np.ndarray
    B_hold: np.ndarray
    B_in: np.ndarray
    mult: np.ndarray
    c_scores: np.ndarray
    c_region: np.ndarray
    scores_inj: np.ndarray
    warnings: list[str]


def setup_fit(table: _Table, cfg: SelectionConfig, eval_split: str) -> _FitSetup:
    """Split the regions into fit and held out, place the knots on the fit injections and build
    the bases; adds the fit/held-out counts to ``table.rows``. Refuses fewer than ``MIN_FIT`` fit
    injections, warns below ``FEW_FIT``."""
    inj, x, regions = table.inj, table.x, table.regions
    fit_regions, hold_regions = split_regions(regions, cfg.holdout_fraction, cfg.seed)
    inj_region = inj["region_id"].astype(np.int64).to_numpy()
    inj_rindex = np.searchsorted(regions, inj_region)          # each injection's index among the split's regions
    is_fit = np.isin(inj_region, fit_regions)
    t_all = sf.terms(x)
    t_fit = {k: v[is_fit] for k, v in t_all.items()}
    x_fit = {k: v[is_fit] for k, v in x.items()}
    warnings = []
    if is_fit.sum() < MIN_FIT:
        raise SelectionError(f"{int(is_fit.sum())} injections in the fit regions of split {eval_split}; the model needs >= {MIN_FIT}")
    if is_fit.sum() < FEW_FIT:
        warnings.append(f"{int(is_fit.sum())} injections in the fit regions (< {FEW_FIT}): the model and its validation are indicative")
    try:
        design = design_for(t_fit, cfg.fit.n_knots)
    except ValueError as exc:
        raise SelectionError(f"{table.path}: the fit injections cannot place a term's knots: {exc}") from exc
    input_range = term_ranges(x_fit)
    trange = term_ranges(t_fit)
    inside = in_range(t_all, x, trange, input_range)
    hold = ~is_fit & inside
    table.rows.update({"fit": int(is_fit.sum()), "held_out": int((~is_fit).sum()), "held_out_outside_range": int((~is_fit & ~inside).sum()),
                       "fit_regions": int(fit_regions.size), "held_out_regions": int(hold_regions.size)})
    B_fit = design.basis(t_fit)
    B_hold = design.basis({k: v[hold] for k, v in t_all.items()})
    B_in = design.basis({k: v[inside] for k, v in t_all.items()})
    mult = bootstrap_multiplicities(len(regions), cfg.fit.n_replicates, seed=cfg.seed)
    c_scores = table.ctl["score"].to_numpy(float)
    c_region = np.searchsorted(regions, table.ctl["region_id"].astype(np.int64).to_numpy())
    return _FitSetup(fit_regions, hold_regions, inj_region, inj_rindex, is_fit, t_all, design, input_range, trange, inside, hold,
                     B_fit, B_hold, B_in, mult, c_scores, c_region, inj["score"].to_numpy(float), warnings)


def binned_curve_rows(b, inj_in: pd.DataFrame, passed_in: np.ndarray, draws_in, name: str, primary: str,
                      confidence: float) -> list[dict[str, Any]]:
    """The model beside the binned completeness on the completeness stage's bin ``b`` (in-range
    injections ``inj_in``, ``passed_in`` above the threshold): one row per bin with its Wilson
    interval and the model's band (none when the table lacks the bin's column)."""
    if b.column not in inj_in.columns:
        return []
    v = pd.to_numeric(inj_in[b.column], errors="coerce").to_numpy(float)
    e = np.asarray(b.edges, float)
    lab = np.where((v >= e[0]) & (v <= e[-1]), np.clip(np.searchsorted(e, v, side="right") - 1, 0, e.size - 2), -1)
    out = []
    for c in bin_predictions(draws_in, passed_in.astype(float), lab, confidence):
        wlo, whi = wilson_interval(c["k"], c["n"], confidence)
        hi_edge = e[c["group"] + 1]
        out.append({"var": b.name, "threshold": name, "primary": int(name == primary), "bin": c["group"],
                    "bin_lo": e[c["group"]], "bin_hi": hi_edge,
                    "bin_center": 0.5 * (e[c["group"]] + (hi_edge if np.isfinite(hi_edge) else e[c["group"]])),
                    "n": c["n"], "k": c["k"], "observed": c["observed"], "observed_lo": float(wlo), "observed_hi": float(whi),
                    "model": c["model"], "model_lo": c["model_lo"], "model_hi": c["model_hi"]})
    return out


def sky_completeness(inj_in: pd.DataFrame, draws_in, cfg: SelectionConfig, binned: Any) -> dict[str, Any]:
    """The model's sky-weighted completeness over the in-range injections (weights
    ``sky_weight``, else 1) with its band, beside the completeness stage's ``binned`` estimate."""
    w = inj_in["sky_weight"].to_numpy(float) if "sky_weight" in inj_in.columns else np.ones(len(inj_in))
    d = draws_in.P @ w / w.sum() if w.sum() > 0 else np.full(cfg.n_draws, np.nan)
    a = (1 - cfg.fit.confidence) / 2
    return {"model": float(draws_in.p_hat @ w / w.sum()), "model_lo": float(np.quantile(d, a)), "model_hi": float(np.quantile(d, 1 - a)),
            "binned": binned, "n": int(len(w))}


def operating_point(arch: str, t: Mapping[str, Any], table: _Table, s: _FitSetup, cfg: SelectionConfig, bins, primary: str,
                    cmet: Mapping[str, Any]) -> tuple[dict, dict, list[dict], dict]:
    """Fit, validate and compare one threshold ``t`` of the completeness stage: (its operating
    point in the file, its validation on the held-out injections, its binned curve rows, its
    sky-weighted completeness); prints a line."""
    name, fpr, thr = t["name"], float(t["target_fpr"]), float(t["score"])
    tf = time.perf_counter()
    inj, x, is_fit, hold, t_all = table.inj, table.x, s.is_fit, s.hold, s.t_all
    fit = fit_operating_point(s.design, s.B_fit, s.scores_inj[is_fit], s.inj_rindex[is_fit], s.c_scores, s.c_region, len(table.regions),
                              name, fpr, thr, cfg.fit, s.mult)
    op = operating_point_doc(s.design, fit, cfg.fit.confidence)
    passed_h = (s.scores_inj[hold] > thr).astype(float)
    vx = {**{k: v[hold] for k, v in x.items()}, "log10_snr_implied": t_all["log10_snr_implied"][hold],
          "theta_e_over_psf": t_all["theta_e_over_psf"][hold]}
    disp = region_dispersion(sigmoid(s.B_fit @ fit.values), (s.scores_inj[is_fit] > thr).astype(float), s.inj_region[is_fit])
    val = validate(s.B_hold, passed_h, vx, VALIDATION_SURFACE, fit, cfg.fit.confidence, cfg.n_validation_bins,
                   cfg.min_bin_n, cfg.n_draws, cfg.seed, dispersion=disp)
    inj_in = inj[s.inside]
    passed_in = s.scores_inj[s.inside] > thr
    draws_in = predictive_draws(s.B_in, fit, cfg.n_draws, cfg.seed)
    curves = [row for b in bins for row in binned_curve_rows(b, inj_in, passed_in, draws_in, name, primary, cfg.fit.confidence)]
    sky = sky_completeness(inj_in, draws_in, cfg, ((cmet.get("sky") or {}).get(name) or {}).get("all"))
    print(f"selection {arch}: {name}: fitted on {fit.n_fit} injections ({fit.n_pass} pass) with {fit.replicates.shape[0]} "
          f"replicates in {time.perf_counter() - tf:.1f} s; held-out bins inside the predictive band "
          f"{_frac(val['fraction_inside_predictive'])} of {val['n_bins_counted']} (regions' dispersion "
          f"{disp['phi']:.2f})", flush=True)
    return op, val, curves, sky


def selection_doc(arch: str, p: Params, ccfg, table: _Table, s: _FitSetup, ops: list[dict], validation: dict, primary: str,
                  models_dir: str) -> dict[str, Any]:
    """The selection-function file's document (``dhs.selection.function``)."""
    ev, checkpoint = table.ev, Path(models_dir) / arch / "checkpoint_best.pt"
    return {
        "format": sf.FORMAT, "format_version": sf.FORMAT_VERSION, "primary": primary,
        "inputs": {k: {"unit": u, "description": d, "range": list(s.input_range[k])} for k, (u, d) in sf.INPUTS.items()},
        "terms": {k: {"definition": d, "monotone": m, "range": list(s.trange[k])} for k, (d, m) in sf.TERMS.items()},
        "operating_points": ops,
        "finder": {"arch": arch, "checkpoint": str(checkpoint), "checkpoint_sha256": file_sha256(checkpoint)},
        "measured_on": {"split": ccfg.eval_split, "score_table_sha256": file_sha256(table.path),
                        "config_id": sorted(map(str, ev["config_id"].dropna().unique())) if "config_id" in ev.columns else None,
                        "fit_regions": s.fit_regions.tolist(), "held_out_regions": s.hold_regions.tolist(), "n_fit": table.rows["fit"]},
        "params": {"selection": dict(p.get("selection") or {}), "evaluation_fprs": list(ccfg.fprs)},
        "code": code_version(),
        "validation": {n: {k: v[k] for k in ("n", "n_bins_counted", "fraction_inside_predictive", "fraction_inside_model_band")}
                       | {"calibration_p_value": v["calibration"]["p_value"]} for n, v in validation.items()},
    }


CURVE_COLUMNS = ["threshold", "primary", "bin", "bin_lo", "bin_hi", "bin_center", "n", "k", "observed", "observed_lo", "observed_hi",
                 "model", "model_lo", "model_hi"]


def write_curves(arch: str, curves: list[dict], bins, primary: str, eval_split: str, plots_dir: str, figures: bool) -> None:
    """plots/selection/{arch}/{var}.csv per completeness bin (a header alone where it has no
    rows) and, with ``figures``, its figure."""
    from dhs.selection.figures import model_curve_figure

    table = pd.DataFrame(curves)
    out = Path(plots_dir) / arch
    for b in bins:
        t = table[table["var"] == b.name] if len(table) else table
        atomic.write_text(out / f"{b.name}.csv", (t[CURVE_COLUMNS] if len(t) else pd.DataFrame(columns=CURVE_COLUMNS)).to_csv(index=False))
        if figures:
            model_curve_figure(t, b.name, primary, f"{arch}: selection model vs binned completeness ({eval_split}, {primary})",
                               out / f"{b.name}.png")


def print_summary(arch: str, rows: Mapping[str, Any], eval_split: str, out_path: Path, sky_binned: Mapping[str, dict], t0: float) -> None:
    """The stage's closing lines: the row accounting and each threshold's sky-weighted
    completeness, model against binned."""
    print(f"selection {arch}: {rows['injections']} injections of split {eval_split} ({rows['fit']} fit, {rows['held_out']} held out, "
          f"{rows['held_out_outside_range']} of them outside the fit's range; rejected: {rows['injections_rejected'] or 'none'}); "
          f"wrote {out_path} in {time.perf_counter() - t0:.1f} s", flush=True)
    for name, s in sky_binned.items():
        b = s["binned"] or {}
        print(f"  {name}: sky-weighted completeness, model {s['model']:.3f} [{s['model_lo']:.3f}, {s['model_hi']:.3f}], "
              f"binned {b.get('completeness', float('nan')):.3f}")


def run(arch: str, params: str | Params = "params.yaml", scores_dir: str = "data/scores", completeness_dir: str = "metrics/completeness",
        models_dir: str = "data/models", out_dir: str = "data/selection", metrics_dir: str = "metrics/selection",
        plots_dir: str = "plots/selection", figures: bool = True) -> dict[str, Any]:
    """Fit and validate the selection function of ``arch`` at every FPR threshold of its
    completeness metrics, write its file, curves and metrics (module docstring); ``figures``:
    draw the PNGs (the closure test leaves them out)."""
    from dhs.measurement.measure import CompletenessConfig, fpr_name

    p = as_params(params).require("selection", "completeness")
    ccfg = CompletenessConfig.from_params(p["completeness"], p.source, p["evaluation"])
    cfg = SelectionConfig.from_params(p.get("selection"), p.source, confidence=ccfg.confidence)
    t0 = time.perf_counter()
    table = read_table(arch, scores_dir, ccfg.eval_split)
    s = setup_fit(table, cfg, ccfg.eval_split)
    primary = fpr_name(ccfg.plot_fpr)
    ops, validation, curves, sky_binned = [], {}, [], {}
    thresholds, cmet = load_completeness(Path(completeness_dir) / f"{arch}.json", ccfg.eval_split)
    for t in thresholds:
        op, validation[t["name"]], bin_rows, sky_binned[t["name"]] = operating_point(arch, t, table, s, cfg, ccfg.bins, primary, cmet)
        ops.append(op)
        curves += bin_rows
    out_path = Path(out_dir) / f"{arch}.json"
    sf.write(selection_doc(arch, p, ccfg, table, s, ops, validation, primary, models_dir), out_path)
    write_curves(arch, curves, ccfg.bins, primary, ccfg.eval_split, plots_dir, figures)
    for w in s.warnings:
        print(f"selection {arch}: WARNING: {w}", file=sys.stderr)
    design, rows = s.design, table.rows
    metrics = {"arch": arch, "file": str(out_path), "primary": primary, "rows": rows, "eval_split": ccfg.eval_split, "warnings": s.warnings,
               "terms": list(design.names), "knots": {t: design.knots[t].tolist() for t in design.names},
               "validation": validation, "sky": sky_binned,
               "operating_points": [{k: o[k] for k in ("name", "fpr", "threshold", "n_fit", "n_pass", "n_replicates")}
                                    | {"band_components": len(o["band"]["scale"])} for o in ops]}
    headline.write("selection", Path(metrics_dir) / f"{arch}.json", metrics)
    print_summary(arch, rows, ccfg.eval_split, out_path, sky_binned, t0)
    return metrics
