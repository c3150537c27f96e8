"""Operating thresholds set on controls, never at score 0.5 (docs/conventions.md, evaluation rules).

Convention used everywhere in the pipeline: a stamp is *recovered* (passes) when
``score > threshold``. For a target false-positive rate ``fpr`` on ``n`` controls the threshold
is the (k+1)-th highest control score with k = floor(fpr * n), so exactly the k controls above it
pass when scores are untied (fewer under ties: the achieved FPR never exceeds the target and
falls short of it by less than one control, 1/n, without ties). With k = 0 the threshold is the
highest control score and nothing that scores like a control passes.

Few controls set a high-purity threshold: at FPR 1e-4 with 60k controls six of them decide it.
``low_count`` marks fpr * n_controls < ``min_expected`` (default 10) so that no one reads such a
threshold as precise.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from dhs.errors import StageError


class ThresholdError(StageError, ValueError):
    pass


@dataclass(frozen=True)
class Threshold:
    target_fpr: float | None       # None for a fixed-score threshold
    score: float                   # pass: score > this
    n_controls: int
    n_controls_above: int          # controls passing (the FPR numerator)
    achieved_fpr: float
    low_count: bool                # fpr * n_controls < min_expected: threshold set by a handful of controls

    def as_dict(self) -> dict:
        return asdict(self)


def _controls(control_scores) -> np.ndarray:
    s = np.asarray(control_scores, dtype=np.float64).ravel()
    if s.size == 0:
        raise ThresholdError("no control scores: an FPR threshold needs controls (is the test split's control set empty?)")
    if not np.isfinite(s).all():
        raise ThresholdError(f"{int((~np.isfinite(s)).sum())} control score(s) are NaN or Inf")
    return s


def threshold_at_fpr(control_scores, fpr: float, min_expected: float = 10.0) -> Threshold:
    s = np.sort(_controls(control_scores))[::-1]
    return threshold_from_top(s[: top_needed(fpr, s.size)], s.size, fpr, min_expected)


def top_needed(fpr: float, n_controls: int) -> int:
    """How many of the highest control scores fix the threshold at ``fpr``: k + 1."""
    if not 0.0 < fpr < 1.0:
        raise ThresholdError(f"FPR must be in (0, 1), got {fpr}")
    return int(math.floor(fpr * n_controls + 1e-9)) + 1


def threshold_from_top(top_desc, n_controls: int, fpr: float, min_expected: float = 10.0) -> Threshold:
    """The threshold from the highest control scores in descending order (at least
    ``top_needed(fpr, n_controls)`` of them), so a distributed engine need only ship those."""
    if n_controls < 1:
        raise ThresholdError("no control scores: an FPR threshold needs controls (is the evaluation split's control set empty?)")
    k = top_needed(fpr, n_controls) - 1
    top = np.asarray(top_desc, dtype=np.float64)
    if top.size < k + 1:
        raise ThresholdError(f"need the top {k + 1} control scores for FPR {fpr}, got {top.size}")
    t = float(top[k])  # k < n since fpr < 1; the k scores above it pass
    above = int((top[: k + 1] > t).sum())
    return Threshold(fpr, t, int(n_controls), above, above / n_controls, fpr * n_controls < min_expected)


def fixed_threshold(control_scores, score: float, min_expected: float = 10.0) -> Threshold:
    """A threshold at a given score, with the FPR it implies on the controls."""
    s = _controls(control_scores)
    above = int((s > score).sum())
    return Threshold(None, float(score), s.size, above, above / s.size, above < min_expected)


def weighted_threshold_at_fpr(control_scores, weights, fpr: float) -> float:
    """The score threshold at which the controls passing (score > threshold) carry at most
    ``fpr`` of the controls' total weight: the score of the first control, in descending order,
    whose cumulative weight exceeds fpr x total. With unit weights this is ``threshold_at_fpr``'s
    threshold. Used to ask how a threshold moves when some kinds of control are made rarer or
    commoner on the sky (``weights``: each control's relative frequency)."""
    s = _controls(control_scores)
    w = np.asarray(weights, dtype=np.float64).ravel()
    if w.shape != s.shape or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ThresholdError("control weights must be finite, >= 0, one per control score, not all 0")
    if not 0.0 < fpr < 1.0:
        raise ThresholdError(f"FPR must be in (0, 1), got {fpr}")
    order = np.argsort(-s, kind="stable")
    cum = np.cumsum(w[order]) / w.sum()
    k = int(np.searchsorted(cum, fpr + 1e-12, side="right"))
    return float(s[order][min(k, s.size - 1)])


def fpr_name(fpr: float) -> str:
    """The key of an operating point set at a false-positive rate: ``fpr_0.01``."""
    return f"fpr_{fpr:g}"


def score_name(score: float) -> str:
    """The key of a fixed-score threshold: ``score_0.5``."""
    return f"score_{score:g}"


def operating_point_label(name: str) -> str:
    """The words a figure shows for an operating point's key: ``fpr_0.01`` -> ``FPR 1%``,
    ``fpr_0.001`` -> ``FPR 0.1%``, ``score_0.5`` -> ``score > 0.5``; anything else unchanged
    (a prefix such as ``small_cnn fpr_0.01`` keeps its first words)."""
    head, _, key = str(name).rpartition(" ")
    try:
        if key.startswith("fpr_"):
            text = f"FPR {float(key[4:]) * 100:g}%"
        elif key.startswith("score_"):
            text = f"score > {float(key[6:]):g}"
        else:
            return str(name)
    except ValueError:
        return str(name)
    return f"{head} {text}" if head else text

