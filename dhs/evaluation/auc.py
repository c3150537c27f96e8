"""The area under the ROC curve, its bootstrap interval, and the ROC curve itself.

``auroc`` is the one AUC of the pipeline (training's val AUC, completeness, the baselines, the
gates): scikit-learn's ``roc_auc_score``, the trapezoidal area under the ROC, equal to the
Mann-Whitney statistic with ties counted one half. ``bootstrap_auroc`` is its one percentile
interval, resampling rows, sky regions, or rows within each class (``stratified``: every
resample keeps both classes). ``roc_curve`` gives the curve the report draws, one point per
distinct score; ``thin_curve`` keeps a drawable number of its points.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from dhs.errors import StageError

BOOTSTRAP_UNITS = ("row", "region", "stratified")
MIN_BOOTSTRAP_REGIONS = 10


class AUCError(StageError, ValueError):
    pass


def auroc(y, score) -> float:
    """ROC AUC of ``score`` for binary labels ``y`` (1 = positive); both classes must be present."""
    return float(roc_auc_score(np.asarray(y).astype(int), score))


def auroc_or_none(y, score) -> float | None:
    """``auroc``, or None when ``y`` holds one class only (AUC undefined)."""
    return auroc(y, score) if len(np.unique(y)) == 2 else None


def bootstrap_auroc(y, score, groups, n_boot: int, seed: int, unit: str = "row") -> dict[str, Any]:
    """Percentile 95% interval of the AUC over ``n_boot`` resamples drawn from
    ``default_rng([seed, 7])``: of rows (``row``), of the sky regions in ``groups`` (``region``;
    with fewer than ``MIN_BOOTSTRAP_REGIONS`` it resamples rows and says so), or of rows within
    each class (``stratified``). Resamples holding one class only are skipped and counted.
    Returns {n, unit_requested, unit, ci95 ([lo, hi] or None), n_valid, [note], [n_regions]}."""
    if unit not in BOOTSTRAP_UNITS:
        raise AUCError(f"bootstrap unit must be one of {list(BOOTSTRAP_UNITS)}, got {unit!r}")
    y, score = np.asarray(y), np.asarray(score, dtype=np.float64)
    out: dict[str, Any] = {"n": int(n_boot), "unit_requested": unit}
    if n_boot == 0 or len(np.unique(y)) < 2:
        out.update(unit=None, ci95=None, n_valid=0,
                   note="n_bootstrap = 0" if n_boot == 0 else "one class only: AUC undefined")
        return out
    rng = np.random.default_rng([seed, 7])
    use_regions = unit == "region" and groups is not None
    if use_regions:
        uniq, inv = np.unique(groups, return_inverse=True)
        if len(uniq) < MIN_BOOTSTRAP_REGIONS:
            use_regions = False
            out["note"] = f"only {len(uniq)} regions (< {MIN_BOOTSTRAP_REGIONS}): resampled rows instead"
        else:
            members = [np.flatnonzero(inv == g) for g in range(len(uniq))]
            out["n_regions"] = int(len(uniq))
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    aucs = []
    n = len(y)
    for _ in range(n_boot):
        if unit == "stratified":
            idx = np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])
        elif use_regions:
            pick = rng.integers(0, len(members), len(members))
            idx = np.concatenate([members[g] for g in pick])
        else:
            idx = rng.integers(0, n, n)
        yb = y[idx]
        if yb.min() == yb.max():
            continue
        aucs.append(auroc(yb, score[idx]))
    out["unit"] = "stratified" if unit == "stratified" else "region" if use_regions else "row"
    out["n_valid"] = len(aucs)
    out["ci95"] = [float(np.percentile(aucs, 2.5)), float(np.percentile(aucs, 97.5))] if aucs else None
    return out


def roc_curve(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) from the highest score down; one point per distinct score, (0, 0) first (the
    last point of each run of tied scores, so its area is ``auroc``)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    if s.shape != y.shape or s.ndim != 1:
        raise AUCError(f"scores and labels must be 1-D of one length, got {s.shape} and {y.shape}")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise AUCError(f"a ROC needs injections and controls; got {n_pos} injections and {n_neg} controls")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    tp, fp = np.cumsum(y), np.cumsum(~y)
    last = np.r_[s[1:] != s[:-1], True]  # last index of each tie run
    return np.r_[0.0, fp[last] / n_neg], np.r_[0.0, tp[last] / n_pos]


def thin_curve(f: np.ndarray, t: np.ndarray, max_points: int = 4000) -> tuple[np.ndarray, np.ndarray]:
    """At most about ``2 * max_points`` points of a ROC for drawing: evenly spaced in index and
    in log FPR (so the low-FPR end keeps its steps), ends kept. Numbers are never computed from it."""
    n = len(f)
    if n <= 2 * max_points:
        return f, t
    pos = f[f > 0]
    grid = np.logspace(np.log10(pos.min()), 0.0, max_points) if pos.size else np.empty(0)
    idx = np.unique(np.r_[0, n - 1, np.linspace(0, n - 1, max_points).astype(int),
                          np.clip(np.searchsorted(f, grid), 0, n - 1)])
    return f[idx], t[idx]
