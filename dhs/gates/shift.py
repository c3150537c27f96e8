"""Shift invariance: does the model key on the exact stamp centre?

A catalogue cutout puts the galaxy at an arbitrary sub-pixel position, with centroid errors of
~0.05-0.2 arcsec, so a finder whose scores move when a stamp is shifted by a pixel sets
thresholds that mean nothing on real cutouts (a model that had learnt the centre let 71 % of
controls over its FPR-0.01 threshold after a one-pixel shift). The gate moves the test stamps
(``shift_offsets_px``: fractions of a pixel by a Fourier phase ramp, whole pixels by a roll;
both circular, so only a couple of edge pixels cross over) and scores them again:

- **FPR at each operating threshold** (the completeness stage's thresholds, set on the unshifted
  test controls; pass = score > threshold): the shifted controls' FPR must stay within
  ``shift_max_fpr_ratio`` (1.5) of the unshifted FPR, for every shift and every threshold whose
  expected count of controls above it (FPR x n_controls) is at least
  ``evaluation.min_expected_controls``; thresholds below that count are reported, not gated (a
  handful of controls cannot resolve a factor of 1.5).
- **AUROC** of the shifted stamps (controls and injections) must not fall by more than
  ``shift_max_auc_drop`` (0.005) below the unshifted AUROC, for every shift.

Without the completeness stage's thresholds, they are set on the controls scored here at the
operating FPRs (same rule: the (k+1)-th highest control score, k = floor(FPR n)).

Each check decides on its 95% interval (``dhs.gates.result.decide``), both paired, since the
shifted and unshifted scores are of the same stamps: the AUROC drop by a stratified bootstrap of
the rows (each resample gives both AUROCs), the FPR ratio by a bootstrap of the controls (each
resample gives both counts above the threshold). A check FAILs only when its whole interval lies
above its limit; the gate FAILs when any check does. Fewer than ``min_rows_per_class`` controls
or injections: SKIP.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from dhs.evaluation.auc import auroc
from dhs.evaluation.scores import sigmoid
from dhs.evaluation.thresholds import threshold_at_fpr
from dhs.gates.config import GatesConfig
from dhs.gates.pixels import ScoreFn, chunks
from dhs.gates.result import (CONSISTENT, DECISIONS, STRADDLES, VALUE_ONLY, Limit, aucs_on, bootstrap_rows, ci95,
                              count_ratio_with_ci, decide, enough_rows, gate_result, interval_record, skipped)
from dhs.imaging.centring import fourier_shift

SHIFT_RULE = ("for every shift: FPR(shifted controls) / FPR(unshifted) <= shift_max_fpr_ratio at each operating threshold "
              "with FPR x n_controls >= min_expected_controls, and AUROC drop <= shift_max_auc_drop; each decided on its "
              "paired 95% interval: FAIL only when a whole interval lies above its limit; without intervals, the values alone")
MORE_ROWS = "gates.shift_n_eval (0 = every test stamp)"


def shift_images(images: np.ndarray, dy: float, dx: float, batch: int = 512) -> np.ndarray:
    """(N, C, S, S) stamps moved by (dy, dx) pixels: a roll for whole pixels, a Fourier phase
    ramp otherwise (both circular)."""
    if float(dy).is_integer() and float(dx).is_integer():
        return np.roll(images, (int(dy), int(dx)), axis=(-2, -1))
    out = np.empty(images.shape, dtype=np.float32)
    for sl in chunks(len(images), batch):
        x = torch.from_numpy(np.asarray(images[sl], dtype=np.float32))
        out[sl] = fourier_shift(x, torch.tensor([[dy, dx]], dtype=torch.float64).expand(len(x), 2)).numpy()
    return out


def operating_thresholds(completeness_metrics: Mapping | None, control_scores: np.ndarray, fprs, min_expected: float) -> dict:
    """name -> (target FPR, score threshold): the completeness stage's, else set on ``control_scores``."""
    if completeness_metrics is not None:
        return {t["name"]: (float(t["target_fpr"]), float(t["score"])) for t in completeness_metrics["thresholds"]
                if t.get("target_fpr") is not None}
    return {f"fpr_{f:g}": (float(f), threshold_at_fpr(control_scores, f, min_expected).score) for f in fprs}


def shift_gate(score: ScoreFn, images: np.ndarray, meta, labels: np.ndarray, logits: np.ndarray, cfg: GatesConfig,
               thresholds: Mapping[str, tuple[float, float]], min_expected: float, examples: dict | None = None) -> dict:
    """The shift gate (module docstring). ``thresholds``: name -> (target FPR, score threshold);
    ``logits`` the model's unshifted logits of ``images``."""
    name, m = "shift", cfg.min_rows_per_class
    y = np.asarray(labels).astype(int)
    ctl = y == 0
    n_ctl = int(ctl.sum())
    why = enough_rows(y, m, MORE_ROWS, ("injection", "control"))
    if why:
        return skipped(name, cfg.shift_max_fpr_ratio, SHIFT_RULE, why, n=len(y), min_rows_per_class=m)
    ratio_limit = Limit("shift_max_fpr_ratio", cfg.shift_max_fpr_ratio, strict=False)
    drop_limit = Limit("shift_max_auc_drop", cfg.shift_max_auc_drop, strict=False)
    s0 = sigmoid(logits)
    auc0 = auroc(y, logits)
    rows = bootstrap_rows(y, cfg.n_bootstrap, cfg.seed)   # the same resamples for every shift: paired with the unshifted AUROC
    boot0 = aucs_on(rows, y, logits)
    shifts, failed, unresolved = [], [], []
    worst_ratio = worst_drop = None   # (value, ci) of the largest point value
    decisions = []

    def note(status: str, decision: str, what: str) -> None:
        decisions.append(decision)
        if status == "FAIL":
            failed.append(what)
        elif decision == CONSISTENT:
            unresolved.append(what)

    for i, (dy, dx) in enumerate(cfg.shift_offsets_px):
        print(f"gates: shift ({dy:g}, {dx:g}) px, {i + 1} of {len(cfg.shift_offsets_px)}: scoring {len(images)} stamps", flush=True)
        lg = score(shift_images(images, dy, dx), meta)
        s1 = sigmoid(lg)
        auc1 = auroc(y, lg)
        drop = auc0 - auc1
        drop_ci = ci95(boot0 - aucs_on(rows, y, lg)) if rows else None
        status, decision, why = decide(drop, drop_ci, drop_limit, fmt=".4f", more_rows=MORE_ROWS)
        if worst_drop is None or drop > worst_drop[0]:
            worst_drop = (drop, drop_ci)
        entry = {"shift_px": [dy, dx], "auroc": auc1, "auroc_drop": drop, "auroc_drop_ci95": drop_ci, "decision": decision,
                 "thresholds": {}}
        note(status, decision, f"AUROC {auc0:.4f} -> {auc1:.4f} after a shift of ({dy:g}, {dx:g}) px: {why}")
        for tname, (fpr, thr) in thresholds.items():
            above0, above1 = s0[ctl] > thr, s1[ctl] > thr
            k0, k1 = int(above0.sum()), int(above1.sum())
            gated = fpr * n_ctl >= min_expected
            ratio, ratio_ci = count_ratio_with_ci(above1, above0, cfg.n_bootstrap if gated else 0, cfg.seed)
            entry["thresholds"][tname] = {"target_fpr": fpr, "score_threshold": thr, "n_controls": n_ctl, "above_unshifted": k0,
                                          "above_shifted": k1, "fpr_unshifted": k0 / n_ctl, "fpr_shifted": k1 / n_ctl,
                                          "ratio": ratio, "ratio_ci95": ratio_ci, "gated": gated}
            if gated:
                status, decision, why = decide(ratio, ratio_ci, ratio_limit, fmt=".2f", more_rows=MORE_ROWS)
                entry["thresholds"][tname]["decision"] = decision
                if worst_ratio is None or ratio > worst_ratio[0]:
                    worst_ratio = (ratio, ratio_ci)
                note(status, decision, f"{tname}: {k1} of {n_ctl} controls above the threshold after a shift of "
                                       f"({dy:g}, {dx:g}) px, {k0} before ({ratio:.2f}x; {why})")
        shifts.append(entry)
        if examples is not None and "logits_shifted" not in examples:
            examples.update({"shift_px": (dy, dx), "logits_shifted": lg})
    gated_names = sorted({t for e in shifts for t, d in e["thresholds"].items() if d["gated"]})
    decision = min(decisions, key=DECISIONS.index)
    value, value_ci = worst_ratio if worst_ratio is not None else (0.0, None)
    if failed:
        detail = "; ".join(failed[:4])
    else:
        detail = (f"over {len(cfg.shift_offsets_px)} shifts the control FPR moved by at most {value:.2f}x at "
                  f"{', '.join(gated_names) or 'no gated threshold'} and the AUROC by at most {max(worst_drop[0], 0.0):.4f}" +
                  (f"; consistent with the limits at this sample size only: {'; '.join(unresolved[:3])}" if unresolved else
                   "; no interval (gates.n_bootstrap is 0): the values alone decide" if decision == VALUE_ONLY else
                   f"; every value lies within its limit, some intervals reach beyond ({MORE_ROWS} narrows them)"
                   if decision == STRADDLES else "; every value and its whole interval lie within the limits"))
    return gate_result(name, "FAIL" if failed else "PASS", value, cfg.shift_max_fpr_ratio, SHIFT_RULE, detail,
                       **interval_record(value_ci, len(y), decision, cfg.n_bootstrap), min_rows_per_class=m,
                       auroc_unshifted=auc0, worst_auroc_drop=worst_drop[0], worst_auroc_drop_ci95=worst_drop[1],
                       max_auroc_drop=cfg.shift_max_auc_drop, gated_thresholds=gated_names, n_controls=n_ctl,
                       n_injections=int(y.sum()), shifts=shifts)
