"""The body of stage ``calibration@{arch}``: are the scores probabilities, and what do they mean in the survey?

Reads data/scores/{arch}.parquet. Fits temperature scaling (always) and, with
``calibration.method: isotonic``, an isotonic map on the fit split (val), and judges both on the
eval split (test), which must be a different split. Writes, atomically:

- data/calibration/{arch}/calibrator.json  the fitted map, its temperature, pi_train (injection
  fraction of the fit split) and the checkpoint it belongs to; ``dhs.evaluation.reliability.load_calibrator``
  gives an object with ``.probabilities(logits)`` for later stages
- metrics/calibration/{arch}.json  ECE and MCE (per binning strategy), Brier score and log loss on
  the eval split before and after calibration; rows per split and label; the prevalence section:
  the logit offset to survey prevalence, posteriors there, and purity at each FPR threshold
- plots/calibration/{arch}.csv  reliability curves: one row per non-empty bin, strategy and
  stage (before | after)
- plots/calibration/{arch}.png  reliability diagram with the histogram of scores beneath

params.yaml ``calibration``: method (temperature | isotonic), n_bins, strategies
(uniform, quantile), fit_split, eval_split, survey_prevalence, fprs, min_expected_controls.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from dhs import atomic, headline
from dhs.evaluation.calibrator import Calibrator, save_calibrator
from dhs.calibration.config import CalibrationConfig
from dhs.calibration.figures import reliability_figure
from dhs.evaluation.fitting import DegenerateFitError, fit_isotonic, fit_temperature
from dhs.evaluation.prevalence import prevalence_logit_offset, purity_operating_points
from dhs.evaluation.reliability import CalibrationError, ReliabilityCurve, calibration_summary, nll_from_logits, reliability_curve
from dhs.evaluation.auc import auroc
from dhs.evaluation.scores import read_scores
from dhs.params import Params, as_params

CHECKPOINT = "checkpoint_best.pt"   # the checkpoint the infer stage scores with


def split_rows(scores: pd.DataFrame, split: str) -> pd.DataFrame:
    """The rows of one split, refusing an empty or single-class split."""
    rows = scores[scores["split"] == split]
    if rows.empty:
        raise CalibrationError(f"split {split!r} of the score table is empty; calibration needs scored {split} stamps "
                               f"(check infer.splits and the stamps stage's metrics)")
    n_inj = int(rows["label"].sum())
    if n_inj in (0, len(rows)):
        only = "injections" if n_inj else "controls"
        raise CalibrationError(f"split {split!r} holds only {only} ({len(rows)} rows); calibration needs both injections and controls")
    logits = rows["logit"].to_numpy(np.float64)
    if not np.isfinite(logits).all():
        raise CalibrationError(f"split {split!r}: {int((~np.isfinite(logits)).sum())} non-finite logit(s); rerun `dvc repro infer`")
    return rows


def check_disjoint_regions(fit: pd.DataFrame, ev: pd.DataFrame, fit_split: str, eval_split: str) -> None:
    """Refuse fit and eval splits sharing a sky region (splits are assigned per region)."""
    shared = sorted(set(fit["region_id"].dropna().astype(str)) & set(ev["region_id"].dropna().astype(str)))
    if shared:
        raise CalibrationError(f"splits {fit_split!r} and {eval_split!r} share {len(shared)} region(s), e.g. {shared[:5]}; "
                               f"a calibration judged on the sky it was fitted on is optimistic (docs/conventions.md, evaluation rules)")


def row_counts(rows: pd.DataFrame) -> dict[str, int]:
    n_inj = int(rows["label"].sum())
    return {"total": len(rows), "injection": n_inj, "control": len(rows) - n_inj}


def degenerate_cause(exc: DegenerateFitError, z: np.ndarray, y: np.ndarray, split: str, arch: str) -> str:
    """One sentence for the report and the console: why no temperature fits, and what to do."""
    auc = auroc(y, z)
    if exc.side == "low":
        return (f"the {split} logits are (nearly) perfectly separated (AUROC {auc:.4f} on {len(y)} stamps): no temperature is "
                f"supported by the data; the probabilities are the finder's own (T = 1). Calibration needs a {split} split "
                f"where the finder makes mistakes: more stamps, or harder ones")
    return (f"the finder's {split} logits carry (almost) no information about the label (AUROC {auc:.3f} on {len(y)} stamps), "
            f"so the best temperature flattens every probability to 0.5: the finder is undertrained or uninformative, not "
            f"miscalibrated. The probabilities are the finder's own (T = 1); look at metrics/train/{arch}.json and train "
            f"longer (train.epochs, train.steps_per_epoch) before reading any number of this report")


def fit_calibrator(fit: pd.DataFrame, cfg: CalibrationConfig, checkpoint: Path, arch: str) -> tuple[Calibrator, str | None]:
    """Temperature (always) and, for method isotonic, isotonic knots fitted on the fit rows; and the
    cause when the temperature fit is degenerate (the calibrator is then the identity, T = 1)."""
    z, y = fit["logit"].to_numpy(np.float64), fit["label"].to_numpy()
    knots = fit_isotonic(z, y) if cfg.method == "isotonic" else ((), ())
    try:
        temperature, cause = fit_temperature(z, y), None
    except DegenerateFitError as exc:
        temperature, cause = 1.0, degenerate_cause(exc, z, y, cfg.fit_split, arch)
    cal = Calibrator(method=cfg.method, temperature=temperature, pi_train=float(np.mean(y)),
                     checkpoint=str(checkpoint), checkpoint_sha256=atomic.file_sha256(checkpoint), fit_split=cfg.fit_split,
                     n_fit=len(fit), isotonic_logits=tuple(knots[0]), isotonic_probs=tuple(knots[1]))
    return cal, cause


def curves(probs_by_stage: dict[str, np.ndarray], labels: np.ndarray, cfg: CalibrationConfig) -> dict[tuple[str, str], ReliabilityCurve]:
    return {(s, st): reliability_curve(p, labels, cfg.n_bins, s) for st, p in probs_by_stage.items() for s in cfg.strategies}


def curve_table(curves_by_key: dict[tuple[str, str], ReliabilityCurve]) -> pd.DataFrame:
    """One row per non-empty bin, strategy and stage: the DVC plot data."""
    frames = []
    for (strategy, stage), c in curves_by_key.items():
        filled = np.flatnonzero(c.count > 0)
        frames.append(pd.DataFrame({"strategy": strategy, "stage": stage, "bin": filled,
                                    "bin_lower": c.edges[filled], "bin_upper": c.edges[filled + 1],
                                    "mean_predicted": c.mean_predicted[filled], "observed_fraction": c.observed_fraction[filled],
                                    "count": c.count[filled]}))
    return pd.concat(frames, ignore_index=True)


def prevalence_report(ev: pd.DataFrame, cal: Calibrator, cfg: CalibrationConfig) -> dict:
    """Posteriors at survey prevalence and purity at each FPR threshold on the eval split."""
    y = ev["label"].to_numpy()
    z, s = ev["logit"].to_numpy(np.float64), ev["score"].to_numpy(np.float64)
    offset = prevalence_logit_offset(cal.pi_train, cfg.survey_prevalence)
    post = cal.probabilities_at_prevalence(z, cfg.survey_prevalence)
    points = purity_operating_points(s[y == 1], s[y == 0], cfg.fprs, cfg.survey_prevalence, cfg.min_expected_controls)
    zc, sc = z[y == 0], s[y == 0]
    for pt in points:
        thr_logit = float(zc[sc == pt["threshold_score"]].min())   # exact, also where the score saturates at 1
        pt["posterior_at_threshold"] = float(cal.probabilities_at_prevalence([thr_logit], cfg.survey_prevalence)[0])
    return {"pi_train": cal.pi_train, "pi_survey": cfg.survey_prevalence, "logit_offset": offset,
            "calibrated_logit_for_posterior_half": -offset,
            "raw_logit_for_posterior_half_temperature": -offset * cal.temperature,
            "eval_injection_posterior_median": float(np.median(post[y == 1])),
            "eval_control_posterior_median": float(np.median(post[y == 0])),
            "eval_injection_frac_posterior_above_half": float(np.mean(post[y == 1] > 0.5)),
            "eval_control_frac_posterior_above_half": float(np.mean(post[y == 0] > 0.5)),
            "operating_points": points}


def summary_lines(m: dict) -> list[str]:
    b, a = m["eval"]["before"], m["eval"]["after"]
    s0 = next(k for k in b if k.startswith("ece_"))
    lines = [] if m.get("status") != "degenerate" else [f"DEGENERATE: {m['cause']}"]
    lines += [f"T = {m['temperature']:.3f} (fitted on {m['fit']['split']}, NLL {m['fit']['nll_before']:.4f} -> {m['fit']['nll_after']:.4f})",
             f"{m['eval']['split']} {s0}: {b[s0]:.4f} -> {a[s0]:.4f} ({m['method']}); Brier {b['brier']:.4f} -> {a['brier']:.4f}; "
             f"log loss {b['log_loss']:.4f} -> {a['log_loss']:.4f}"]
    pv = m["prevalence"]
    lines.append(f"prevalence {pv['pi_train']:.3f} -> {pv['pi_survey']:g}: logit offset {pv['logit_offset']:+.3f}")
    for pt in pv["operating_points"]:
        pur = f"purity {pt['purity']:.4f}" if not pt["purity_bounded"] else f"purity >= {pt['purity_lower_bound']:.4f} (no control passes)"
        warn = "  WARNING: FPR x n_controls < min_expected_controls, threshold set by a handful of controls" if pt["low_count"] else ""
        lines.append(f"FPR {pt['target_fpr']:g}: TPR {pt['tpr']:.3f}, achieved FPR {pt['achieved_fpr']:.2e} "
                     f"of {pt['n_controls']} controls, {pur}{warn}")
    return lines


def run(arch: str, params: str | Params = "params.yaml", scores_dir: str = "data/scores", models_dir: str = "data/models",
        calibration_dir: str = "data/calibration", metrics_dir: str = "metrics/calibration",
        plots_dir: str = "plots/calibration") -> dict:
    p = as_params(params).require("calibration")
    cfg = CalibrationConfig.from_params(p["calibration"], p.source, p["evaluation"])
    t0 = time.perf_counter()
    checkpoint = Path(models_dir) / arch / CHECKPOINT
    if not checkpoint.is_file():
        raise CalibrationError(f"{checkpoint} not found: the calibrator must name the model it calibrates; run `dvc repro train@{arch}`")
    scores = read_scores(Path(scores_dir) / f"{arch}.parquet")
    fit, ev = split_rows(scores, cfg.fit_split), split_rows(scores, cfg.eval_split)
    check_disjoint_regions(fit, ev, cfg.fit_split, cfg.eval_split)
    cal, cause = fit_calibrator(fit, cfg, checkpoint, arch)
    if cause:
        print(f"calibration {arch}: DEGENERATE FIT: {cause}", file=sys.stderr)

    z_fit, y_fit = fit["logit"].to_numpy(np.float64), fit["label"].to_numpy()
    z, y = ev["logit"].to_numpy(np.float64), ev["label"].to_numpy()
    probs = {"before": ev["score"].to_numpy(np.float64), "after": cal.probabilities(z)}
    ev_metrics = {"split": cfg.eval_split, **{st: calibration_summary(p, y, cfg.n_bins, cfg.strategies) for st, p in probs.items()}}
    if cfg.method != "temperature":
        ev_metrics["after_temperature"] = calibration_summary(cal.temperature_probabilities(z), y, cfg.n_bins, cfg.strategies)
    fit_metrics = {"split": cfg.fit_split, "nll_before": nll_from_logits(z_fit, y_fit),
                   "nll_after": nll_from_logits(z_fit / cal.temperature, y_fit)}
    metrics = {"arch": arch, "status": "degenerate" if cause else "ok", "cause": cause,
               "method": cfg.method, "temperature": cal.temperature, "n_bins": cfg.n_bins,
               "isotonic_knots": len(cal.isotonic_logits), "checkpoint": str(checkpoint), "checkpoint_sha256": cal.checkpoint_sha256,
               "rows": {cfg.fit_split: row_counts(fit), cfg.eval_split: row_counts(ev)},
               "rows_other_splits": int(len(scores) - len(fit) - len(ev)),
               "fit": fit_metrics, "eval": ev_metrics, "prevalence": prevalence_report(ev, cal, cfg), "params": cfg.to_dict()}

    by_key = curves(probs, y, cfg)
    with atomic.atomic_dir(Path(calibration_dir) / arch) as d:
        save_calibrator(d / "calibrator.json", cal)
    headline.write("calibration", Path(metrics_dir) / f"{arch}.json", metrics)
    atomic.write_text(Path(plots_dir) / f"{arch}.csv", curve_table(by_key).to_csv(index=False, float_format="%.6g"))
    atomic.save_figure(Path(plots_dir) / f"{arch}.png",
                       reliability_figure(by_key, probs, cfg, f"{arch}: {cfg.method} calibration, fitted on {cfg.fit_split}, "
                                                        + (f"T = {cal.temperature:.3f}" if not cause else "degenerate fit: T = 1")),
                       dpi=110, bbox_inches="tight")
    for line in summary_lines(metrics):
        print(f"calibration {arch}: {line}")
    print(f"calibration {arch}: wrote {Path(calibration_dir) / arch / 'calibrator.json'}, {Path(metrics_dir) / f'{arch}.json'}, "
          f"{Path(plots_dir) / arch}.{{csv,png}} ({time.perf_counter() - t0:.1f} s)")
    return metrics
