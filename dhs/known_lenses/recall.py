"""Recall of known lenses at operating thresholds, with Wilson intervals, overall and per group.

Convention (as in ``dhs.evaluation.thresholds``): a lens is recovered when its value is strictly greater
than the threshold (``value > threshold``); a value equal to the threshold is missed.
Recall = k / n over the lenses that have a scored cutout; lenses without one are not in n (the
stage reports them separately, by reason). Each entry carries the Wilson 95% interval and
``small_n`` (n < 50, ``dhs.evaluation.intervals.MIN_N_WILSON``), so no one reads a recall on 7 lenses as
precise. Empty groups report n = 0 and recall None: never a number that was not measured.

Groups: ``all``; ``grade=<g>`` for each grade; ``theta_e_arcsec=[lo,hi)`` for each bin of the
Einstein radius where it is known, ``theta_e_arcsec=unknown`` where it is not, and
``theta_e_arcsec=outside_bins`` for known values beyond the edges (only when there are any).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dhs.evaluation.intervals import MIN_N_WILSON, wilson_interval


@dataclass(frozen=True)
class RecallPoint:
    """Where recall is measured: lenses with ``table[column] > threshold`` are recovered."""

    name: str
    column: str
    threshold: float


def recall_entry(k: int, n: int) -> dict:
    """k of n recovered: recall and its Wilson 95% interval (None where n == 0)."""
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return {"n": 0, "k": 0, "recall": None, "wilson_low": None, "wilson_high": None, "small_n": True}
    low, high = wilson_interval(k, n)
    return {"n": int(n), "k": int(k), "recall": k / n, "wilson_low": float(low), "wilson_high": float(high),
            "small_n": bool(n < MIN_N_WILSON)}


def recovered(values, threshold: float) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if not np.isfinite(v).all():
        raise ValueError(f"{int((~np.isfinite(v)).sum())} non-finite score(s); reject those lenses before measuring recall")
    return v > float(threshold)


def theta_e_bin_labels(edges_arcsec: Sequence[float]) -> list[str]:
    return [f"theta_e_arcsec=[{lo:g},{hi:g})" for lo, hi in zip(edges_arcsec[:-1], edges_arcsec[1:])]


def group_masks(table: pd.DataFrame, grades: Sequence[str], theta_e_edges_arcsec: Sequence[float]) -> dict[str, np.ndarray]:
    """Boolean row masks of every reported group (see the module docstring)."""
    edges = np.asarray(theta_e_edges_arcsec, dtype=np.float64)
    if edges.size < 2 or not (np.diff(edges) > 0).all():
        raise ValueError(f"theta_E bin edges must be at least two increasing values (arcsec), got {list(theta_e_edges_arcsec)}")
    masks = {"all": np.ones(len(table), dtype=bool)}
    grade = table["grade"].astype(str).to_numpy()
    for g in grades:
        masks[f"grade={g}"] = grade == g
    theta = pd.to_numeric(table["theta_e_arcsec"], errors="coerce").to_numpy(np.float64)
    known = np.isfinite(theta)
    last = len(edges) - 2
    for i, (label, lo, hi) in enumerate(zip(theta_e_bin_labels(edges), edges[:-1], edges[1:])):
        # [lo, hi), the last bin closed, as everywhere in the pipeline
        masks[label] = known & (theta >= lo) & ((theta <= hi) if i == last else (theta < hi))
    masks["theta_e_arcsec=unknown"] = ~known
    outside = known & ((theta < edges[0]) | (theta > edges[-1]))
    if outside.any():
        masks["theta_e_arcsec=outside_bins"] = outside
    return masks


def recall_by_group(table: pd.DataFrame, points: Sequence[RecallPoint], grades: Sequence[str],
                    theta_e_edges_arcsec: Sequence[float]) -> dict[str, dict[str, dict]]:
    """``{point name: {group: recall_entry}}`` for the scored lenses in ``table`` (one row each,
    columns ``grade``, ``theta_e_arcsec`` and every point's column)."""
    masks = group_masks(table, grades, theta_e_edges_arcsec)
    out: dict[str, dict[str, dict]] = {}
    for p in points:
        if p.column not in table.columns:
            raise ValueError(f"recall point {p.name}: no column {p.column!r} in the score table")
        hit = recovered(table[p.column], p.threshold)
        out[p.name] = {g: recall_entry(int(hit[m].sum()), int(m.sum())) for g, m in masks.items()}
    return out
