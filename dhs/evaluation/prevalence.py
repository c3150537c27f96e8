"""From the training prevalence to the survey's: Bayes' rule on calibrated logits, and the purity
of an FPR threshold at a given prevalence."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.special import expit, logit

from dhs.evaluation.reliability import CalibrationError, _as_probs, _prevalence
from dhs.evaluation.thresholds import threshold_at_fpr


# --------------------------------------------------------------------------- prevalence

def prevalence_logit_offset(pi_train: float, pi_survey: float) -> float:
    """log(pi_s / (1 - pi_s)) - log(pi_train / (1 - pi_train)): add it to a calibrated logit."""
    pt, ps = _prevalence(pi_train, "pi_train"), _prevalence(pi_survey, "pi_survey")
    return float(math.log(ps / (1 - ps)) - math.log(pt / (1 - pt)))


def prevalence_shift(logits, pi_train: float, pi_survey: float) -> np.ndarray:
    """Calibrated logits at prevalence ``pi_train`` moved to prevalence ``pi_survey``.
    Infinite logits (probability exactly 0 or 1) stay infinite."""
    z = np.asarray(logits, dtype=np.float64).ravel()
    if np.isnan(z).any():
        raise CalibrationError(f"logits: {int(np.isnan(z).sum())} NaN value(s)")
    return z + prevalence_logit_offset(pi_train, pi_survey)


def posterior_at_prevalence(probs, pi_train: float, pi_survey: float) -> np.ndarray:
    """Calibrated probabilities at prevalence ``pi_train`` as posteriors at ``pi_survey``."""
    return expit(prevalence_shift(logit(_as_probs(probs)), pi_train, pi_survey))


def purity_at_prevalence(tpr: float, fpr: float, prevalence: float) -> float:
    """TPR pi / (TPR pi + FPR (1 - pi)); NaN when both rates are 0 (nothing passes)."""
    pi = _prevalence(prevalence, "prevalence")
    for name, r in (("tpr", tpr), ("fpr", fpr)):
        if not 0.0 <= r <= 1.0:
            raise CalibrationError(f"{name} must be a rate in [0, 1], got {r!r}")
    den = tpr * pi + fpr * (1.0 - pi)
    return float(tpr * pi / den) if den > 0 else float("nan")


def purity_operating_points(injection_scores, control_scores, fprs: Sequence[float], prevalence: float,
                            min_expected: float = 10.0) -> list[dict[str, Any]]:
    """For each target FPR: the threshold on ``control_scores`` (``threshold_at_fpr``, pass:
    score > threshold), the TPR of ``injection_scores`` there, and the purity at ``prevalence``.

    Where no control passes (achieved FPR 0) the purity is not 1: the FPR is only known to be
    below the resolution 1/n_controls, so ``purity`` is None and ``purity_lower_bound`` is the
    purity at FPR = 1/n_controls (a resolution bound, not a confidence bound; a one-sided 95%
    bound on 0 of n would be about 3/n)."""
    inj = _as_probs(injection_scores, "injection scores")
    pi = _prevalence(prevalence, "prevalence")
    rows = []
    for fpr in fprs:
        t = threshold_at_fpr(control_scores, fpr, min_expected)
        k = int((inj > t.score).sum())
        tpr = k / inj.size
        row = {"target_fpr": float(fpr), "threshold_score": t.score, "n_controls": t.n_controls,
               "n_controls_above": t.n_controls_above, "achieved_fpr": t.achieved_fpr, "low_count": t.low_count,
               "n_injections": int(inj.size), "n_injections_above": k, "tpr": tpr}
        if t.n_controls_above == 0:
            fpr_res = 1.0 / t.n_controls
            row.update(purity=None, purity_bounded=True, fpr_upper_bound=fpr_res,
                       purity_lower_bound=purity_at_prevalence(tpr, fpr_res, pi))
        else:
            row.update(purity=purity_at_prevalence(tpr, t.achieved_fpr, pi), purity_bounded=False,
                       fpr_upper_bound=None, purity_lower_bound=None)
        rows.append(row)
    return rows
