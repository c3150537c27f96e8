"""Sky-weighted completeness: the measurement population's injections (``sky_weight``: each
row's importance weight back to the physical population, ``dhs.simulate.designs``) turned into
the completeness of lenses as they occur on the sky, and how the thresholds move with the
look-alike rate. Pure pandas/numpy on the scalar score table (a few thousand injections).

For a set of injections with weights w and recovered flags f:

    completeness = sum w f / sum w,   n_eff = (sum w)^2 / sum w^2   (Kish),

with a Wilson interval at n_eff (k_eff = completeness x n_eff) and a region bootstrap of the
weighted ratio (the same replicates as the binned tables). With unit weights both reduce to the
unweighted k / n and its intervals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from dhs.evaluation.intervals import region_bootstrap, wilson_interval
from dhs.evaluation.thresholds import weighted_threshold_at_fpr
from dhs.measurement.counts import CompletenessError

DISCOVERABLE = "discoverable"


def weighted_cell(found: np.ndarray, weight: np.ndarray, region_index: np.ndarray, n_regions: int, mult: np.ndarray,
                  confidence: float) -> dict[str, Any]:
    """Weighted completeness of one set of injections with its intervals and sample sizes."""
    found, weight = np.asarray(found, bool), np.asarray(weight, float)
    n = int(found.size)
    if n == 0 or weight.sum() <= 0:
        return {"completeness": None, "n": n, "n_eff": 0.0, "wilson_lo": None, "wilson_hi": None, "boot_lo": None, "boot_hi": None}
    w_sum = float(weight.sum())
    p = float((weight * found).sum() / w_sum)
    n_eff = float(w_sum**2 / (weight * weight).sum())
    lo, hi = wilson_interval(p * n_eff, n_eff, confidence)
    k_r = np.bincount(region_index, weights=weight * found, minlength=n_regions)[:, None]
    n_r = np.bincount(region_index, weights=weight, minlength=n_regions)[:, None]
    bl, bh = region_bootstrap(k_r, n_r, confidence=confidence, multiplicities=mult)
    f = lambda x: None if not np.isfinite(x) else float(x)  # noqa: E731
    return {"completeness": p, "n": n, "n_eff": n_eff, "wilson_lo": f(float(lo)), "wilson_hi": f(float(hi)),
            "boot_lo": f(float(bl[0])), "boot_hi": f(float(bh[0]))}


def sky_headline(inj: pd.DataFrame, thresholds: Mapping[str, float], regions: Sequence[int], mult: np.ndarray,
                 confidence: float) -> dict[str, Any]:
    """Per threshold (name -> score; pass: score > threshold): sky-weighted completeness of every
    injection and of the discoverable ones, and the sky-weighted discoverable fraction. ``inj``:
    region_id, score, and where present sky_weight (else 1) and discoverable."""
    rindex = {int(r): i for i, r in enumerate(regions)}
    ri = inj["region_id"].map(rindex).to_numpy()
    if pd.isna(ri).any():
        raise CompletenessError("injections in regions outside the resampled set")
    ri = ri.astype(np.int64)
    w = inj["sky_weight"].to_numpy(float) if "sky_weight" in inj.columns else np.ones(len(inj))
    if not (np.isfinite(w).all() and (w >= 0).all()):
        raise CompletenessError(f"sky_weight: {int((~np.isfinite(w) | (w < 0)).sum())} value(s) not finite and >= 0")
    disc = inj["discoverable"].to_numpy() == 1 if DISCOVERABLE in inj.columns else None
    score = inj["score"].to_numpy(float)
    out: dict[str, Any] = {"weighted": "sky_weight" in inj.columns, "n_injections": int(len(inj)),
                           "n_eff": float(w.sum() ** 2 / (w * w).sum()) if len(w) and (w > 0).any() else 0.0}
    if disc is not None:
        out["discoverable_fraction"] = weighted_cell(disc, w, ri, len(regions), mult, confidence)
    for name, t in thresholds.items():
        found = score > t
        cell = {"all": weighted_cell(found, w, ri, len(regions), mult, confidence)}
        if disc is not None:
            cell[DISCOVERABLE] = weighted_cell(found[disc], w[disc], ri[disc], len(regions), mult, confidence)
        out[name] = cell
    return out


def lookalike_sensitivity(controls: pd.DataFrame, inj: pd.DataFrame, fprs: Sequence[float], kinds: Sequence[str],
                          factors: Sequence[float], names: Mapping[float, str]) -> dict[str, Any]:
    """Thresholds and sky-weighted discoverable (and overall) completeness with the controls of
    ``kinds`` (column control_kind) given weight ``factor`` each, i.e. look-alikes made that much
    rarer or commoner among the search sample, for each factor; beside factor 1 (the controls as
    drawn). ``controls``: score, control_kind; ``inj``: score, sky_weight?, discoverable?."""
    if "control_kind" not in controls.columns:
        return {}
    is_look = controls["control_kind"].isin(list(kinds)).to_numpy()
    cs = controls["score"].to_numpy(float)
    w = inj["sky_weight"].to_numpy(float) if "sky_weight" in inj.columns else np.ones(len(inj))
    disc = inj["discoverable"].to_numpy() == 1 if DISCOVERABLE in inj.columns else np.ones(len(inj), bool)
    s = inj["score"].to_numpy(float)
    out: dict[str, Any] = {"kinds": list(kinds), "n_lookalike_controls": int(is_look.sum()), "n_controls": int(len(cs)),
                           "lookalike_fraction": float(is_look.mean()) if len(cs) else None, "by_factor": {}}
    for f in (1.0, *factors):
        cw = np.where(is_look, float(f), 1.0)
        per = {}
        for fpr in fprs:
            t = weighted_threshold_at_fpr(cs, cw, fpr)
            found = s > t
            per[names[fpr]] = {
                "score": t,
                "discoverable": float((w[disc] * found[disc]).sum() / w[disc].sum()) if disc.any() and w[disc].sum() > 0 else None,
                "all": float((w * found).sum() / w.sum()) if w.sum() > 0 else None}
        out["by_factor"][f"{f:g}"] = per
    for fpr in fprs:
        base = out["by_factor"]["1"][names[fpr]]["discoverable"]
        moves = [abs(out["by_factor"][f"{f:g}"][names[fpr]]["discoverable"] - base) for f in factors
                 if base is not None and out["by_factor"][f"{f:g}"][names[fpr]]["discoverable"] is not None]
        out.setdefault("max_discoverable_shift", {})[names[fpr]] = max(moves) if moves else None
    return out
