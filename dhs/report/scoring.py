"""Numbers the report computes itself from a score table: ROC, AUROC, TPR at fixed FPR, and
completeness at theta_E/PSF >= 1, all on one split (test by default) so the archs compare on
the same stamps.

Conventions (DOMAIN: evaluation rules): thresholds come from ``dhs.evaluation.thresholds.threshold_at_fpr``
on the split's controls and a stamp passes when ``score > threshold``; the ROC keeps the last
point of each run of tied scores and starts at (0, 0), so AUROC (trapezoids) equals the
Mann-Whitney statistic with ties counted one half.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dhs.evaluation.intervals import wilson_interval
from dhs.evaluation.thresholds import threshold_at_fpr

REPORT_COLUMNS = ("task_id", "split", "label", "logit", "score", "region_id", "theta_e_arcsec", "psf_r_arcsec", "theta_e_over_psf")


class ReportDataError(ValueError):
    pass


def roc_curve(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) from the highest score down; one point per distinct score, (0, 0) first."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    if s.shape != y.shape or s.ndim != 1:
        raise ReportDataError(f"scores and labels must be 1-D of one length, got {s.shape} and {y.shape}")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ReportDataError(f"a ROC needs injections and controls; got {n_pos} injections and {n_neg} controls")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    tp, fp = np.cumsum(y), np.cumsum(~y)
    last = np.r_[s[1:] != s[:-1], True]  # last index of each tie run
    return np.r_[0.0, fp[last] / n_neg], np.r_[0.0, tp[last] / n_pos]


def auroc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    return float(np.trapezoid(tpr, fpr)) if hasattr(np, "trapezoid") else float(np.trapz(tpr, fpr))


@dataclass(frozen=True)
class OperatingPoint:
    """Recovery of injections at a threshold set on the controls at ``target_fpr``."""

    target_fpr: float
    threshold: float
    n_controls: int
    n_controls_above: int
    achieved_fpr: float
    low_count: bool
    n_injections: int
    k_injections: int
    tpr: float
    tpr_lo: float
    tpr_hi: float
    n_resolved: int          # injections with theta_E/PSF >= 1
    k_resolved: int
    completeness_resolved: float
    resolved_lo: float
    resolved_hi: float


def _rate(k: int, n: int) -> tuple[float, float, float]:
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    lo, hi = wilson_interval(k, n)
    return k / n, float(lo), float(hi)


def operating_point(df: pd.DataFrame, fpr: float) -> OperatingPoint:
    """TPR over all injections and completeness over injections with theta_E/PSF >= 1."""
    y = df["label"].to_numpy() == 1
    s = df["score"].to_numpy(np.float64)
    th = threshold_at_fpr(s[~y], fpr)
    passed = s > th.score
    k, n = int((passed & y).sum()), int(y.sum())
    if "theta_e_over_psf" in df.columns:
        res = y & (pd.to_numeric(df["theta_e_over_psf"], errors="coerce").to_numpy(np.float64) >= 1.0)
    else:
        res = np.zeros_like(y)
    kr, nr = int((passed & res).sum()), int(res.sum())
    tpr, tlo, thi = _rate(k, n)
    cr, clo, chi = _rate(kr, nr)
    return OperatingPoint(fpr, th.score, th.n_controls, th.n_controls_above, th.achieved_fpr, th.low_count,
                          n, k, tpr, tlo, thi, nr, kr, cr, clo, chi)


@dataclass(frozen=True)
class ArchSummary:
    arch: str
    split: str
    n_controls: int
    n_injections: int
    fpr: np.ndarray
    tpr: np.ndarray
    auroc: float
    points: tuple[OperatingPoint, ...]


def summarise(arch: str, scores: pd.DataFrame, split: str, fprs: Sequence[float]) -> ArchSummary:
    """ROC and operating points of one arch on one split of its score table."""
    if "split" not in scores.columns:
        raise ReportDataError(f"scores of {arch} have no 'split' column")
    df = scores[scores["split"] == split]
    if df.empty:
        have = sorted(map(str, scores["split"].unique()))
        raise ReportDataError(f"scores of {arch} hold no {split!r} rows (splits present: {have}); "
                              f"set report.split to one of them or rerun infer with that split")
    f, t = roc_curve(df["score"].to_numpy(), df["label"].to_numpy() == 1)
    pts = tuple(operating_point(df, x) for x in fprs)
    y = df["label"].to_numpy() == 1
    return ArchSummary(arch, split, int((~y).sum()), int(y.sum()), f, t, auroc(f, t), pts)
