"""Which rows of the cached train split a finder learns from, and how often each comes round.

- ``training_rows``: every control and the injections whose arc is visible enough;
- ``host_kind_rows``: rows on some host kinds repeated (``train.host_kind_repeat``), and
  ``host_kind_mix``, the same mix for rendered batches;
- ``balanced_rows``: the injections repeated to as many as the controls, overall or within the
  cells of ``balance_strata`` (``train.balance_classes``, ``train.balance_by``).

Every draw here is a fixed function of its inputs (seeded by the stratum, never by the run).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from dhs.models.checkpoint import TrainingError


def training_rows(meta: pd.DataFrame, labels: np.ndarray, min_arc_snr: float,
                  column: str = "arc_snr") -> tuple[np.ndarray, dict[str, int]]:
    """Rows of the train split the finder learns from: every control, and the injections whose
    arc is visible enough (``column >= min_arc_snr``, column ``arc_snr`` or ``arc_snr_int``; all
    with 0). A simulated population that reaches below detectability (sources to r ~ 27) has many
    injections with no visible arc; as training positives they are label noise, while they stay in
    validation, test and every completeness measurement. Returns the rows and the excluded counts
    by reason."""
    n = len(labels)
    if min_arc_snr <= 0:
        return np.arange(n), {}
    if column not in meta.columns:
        raise TrainingError(f"train.min_arc_snr is {min_arc_snr:g} but the train split has no {column} column (real data "
                            f"rarely has one): set train.min_arc_snr: 0")
    snr = pd.to_numeric(meta[column], errors="coerce").to_numpy(np.float64)
    inj = labels == 1
    missing = inj & ~np.isfinite(snr)
    faint = inj & np.isfinite(snr) & (snr < min_arc_snr)
    keep = ~(missing | faint)
    return np.flatnonzero(keep), {f"injection_{column}_below_min": int(faint.sum()), f"injection_{column}_missing": int(missing.sum())}


def host_kind_rows(rows: np.ndarray, meta: pd.DataFrame, repeat: Mapping[str, int]) -> np.ndarray:
    """``rows`` with each row whose ``host_kind`` is in ``repeat`` taken that many times, controls
    and injections alike. The FPR-0.01 threshold is set by the few controls a finder scores
    highest, and those are mostly look-alike hosts (blue companions, chance alignments, spirals,
    rings: a few percent of the hosts); repeating them makes the finder meet them more often. Both
    labels are repeated so that the label stays independent of the host's kind, as it is in the
    survey (injections and controls share one host population)."""
    if not repeat:
        return rows
    if "host_kind" not in meta.columns:
        raise TrainingError(f"train.host_kind_repeat {dict(repeat)} needs a host_kind column, which the train split does not have "
                            f"(only the simulated survey records it): set train.host_kind_repeat: {{}}")
    kinds = meta["host_kind"].astype(str).to_numpy()[rows]
    times = np.ones(len(rows), dtype=np.int64)
    for kind, k in repeat.items():
        times[kinds == kind] = int(k)
    return np.repeat(rows, times)


def host_kind_mix(host_kinds: Mapping[str, float], repeat: Mapping[str, int]) -> dict[str, float]:
    """The relative frequencies of host kinds with ``repeat`` applied: what rendered training
    batches draw, the same mix that repeating the cached rows gives."""
    return {kind: float(f) * int(repeat.get(kind, 1)) for kind, f in host_kinds.items()}


def balanced_rows(rows: np.ndarray, labels: np.ndarray, strata: np.ndarray | None = None) -> np.ndarray:
    """``rows`` with the injections repeated to as many as the controls (k = controls /
    injections: each floor(k) times, and a fixed pseudo-random (k - floor(k)) of them once more;
    at least once), so that a training batch holds as many injections as controls. With visible arcs a
    minority of the injections, this keeps the positives from being outvoted by the controls.

    ``strata`` (one integer per row of the split): k is set within each stratum instead. Keeping
    only visible arcs makes the label depend on what sets visibility (a shallow brick keeps a fifth
    of its injections, a deep one half), which a finder learns as "shallow means no lens"; balanced
    per stratum of depth, seeing and host brightness, the label is independent of them again.
    A stratum without injections keeps its controls once."""
    if strata is None:
        strata = np.zeros(len(labels), dtype=np.int64)
    parts = []
    st = strata[rows]
    for s in np.unique(st):
        r = rows[st == s]
        pos, neg = r[labels[r] == 1], r[labels[r] == 0]
        k = max(1.0, len(neg) / max(len(pos), 1))
        # the extra copies go to a fixed pseudo-random subset: rows are ordered by brick, so the
        # first ones would favour some regions of the sky
        extra = np.random.default_rng([int(s) & 0xFFFFFFFF, len(pos)]).permutation(len(pos))[: int(round((k - int(k)) * len(pos)))]
        parts += [neg, np.repeat(pos, int(k)), pos[np.sort(extra)]]
    return np.sort(np.concatenate(parts), kind="stable")


def balance_strata(meta: pd.DataFrame, columns: tuple[str, ...], n_bins: int = 3) -> np.ndarray | None:
    """One integer per row: the cell of ``columns``' quantile bins (``n_bins`` each, from the rows
    themselves; missing values in a bin of their own). None without columns."""
    if not columns:
        return None
    missing = [c for c in columns if c not in meta.columns]
    if missing:
        raise TrainingError(f"train.balance_by names {missing}, which the train split does not have; its columns include "
                            f"{[c for c in ('psfdepth_r', 'psfsize_r', 'host_r_mag') if c in meta.columns]}")
    cell = np.zeros(len(meta), dtype=np.int64)
    for c in columns:
        v = pd.to_numeric(meta[c], errors="coerce").to_numpy(np.float64)
        finite = np.isfinite(v)
        edges = np.quantile(v[finite], np.linspace(0, 1, n_bins + 1)[1:-1]) if finite.any() else np.array([])
        b = np.where(finite, np.searchsorted(edges, v, side="right"), n_bins)
        cell = cell * (n_bins + 1) + b
    return cell
