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
from dhs.gates.result import gate_result, skipped
from dhs.stamps.centring import fourier_shift

SHIFT_RULE = ("for every shift: FPR(shifted controls) <= shift_max_fpr_ratio x FPR(unshifted) at each operating threshold "
              "with FPR x n_controls >= min_expected_controls, and AUROC drop <= shift_max_auc_drop")


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
    name = "shift"
    y = np.asarray(labels).astype(int)
    ctl = y == 0
    n_ctl = int(ctl.sum())
    if n_ctl < 20 or y.sum() < 20:
        return skipped(name, cfg.shift_max_fpr_ratio, SHIFT_RULE, f"{n_ctl} controls and {int(y.sum())} injections; need >= 20 of each")
    s0 = sigmoid(logits)
    auc0 = auroc(y, logits)
    shifts, worst_ratio, worst_drop, failed = [], 0.0, float("-inf"), []
    for dy, dx in cfg.shift_offsets_px:
        lg = score(shift_images(images, dy, dx), meta)
        s1 = sigmoid(lg)
        auc1 = auroc(y, lg)
        drop = auc0 - auc1
        worst_drop = max(worst_drop, drop)
        entry = {"shift_px": [dy, dx], "auroc": auc1, "auroc_drop": drop, "thresholds": {}}
        if drop > cfg.shift_max_auc_drop:
            failed.append(f"AUROC {auc0:.4f} -> {auc1:.4f} after a shift of ({dy:g}, {dx:g}) px")
        for tname, (fpr, thr) in thresholds.items():
            k0, k1 = int((s0[ctl] > thr).sum()), int((s1[ctl] > thr).sum())
            gated = fpr * n_ctl >= min_expected
            ratio = k1 / k0 if k0 else (float("inf") if k1 else 1.0)
            entry["thresholds"][tname] = {"target_fpr": fpr, "score_threshold": thr, "n_controls": n_ctl, "above_unshifted": k0,
                                          "above_shifted": k1, "fpr_unshifted": k0 / n_ctl, "fpr_shifted": k1 / n_ctl,
                                          "ratio": ratio, "gated": gated}
            if gated:
                worst_ratio = max(worst_ratio, ratio)
                if ratio > cfg.shift_max_fpr_ratio:
                    failed.append(f"{tname}: {k1} of {n_ctl} controls above the threshold after a shift of ({dy:g}, {dx:g}) px, "
                                  f"{k0} before ({ratio:.2f}x)")
        shifts.append(entry)
        if examples is not None and "logits_shifted" not in examples:
            examples.update({"shift_px": (dy, dx), "logits_shifted": lg})
    gated_names = sorted({t for e in shifts for t, d in e["thresholds"].items() if d["gated"]})
    detail = ("; ".join(failed[:4]) if failed else
              f"over {len(cfg.shift_offsets_px)} shifts the control FPR moved by at most {worst_ratio:.2f}x at "
              f"{', '.join(gated_names) or 'no gated threshold'} and the AUROC by at most {max(worst_drop, 0.0):.4f}")
    return gate_result(name, "FAIL" if failed else "PASS", worst_ratio, cfg.shift_max_fpr_ratio, SHIFT_RULE, detail,
                       auroc_unshifted=auc0, worst_auroc_drop=worst_drop, max_auroc_drop=cfg.shift_max_auc_drop,
                       gated_thresholds=gated_names, n_controls=n_ctl, n_injections=int(y.sum()), shifts=shifts)
