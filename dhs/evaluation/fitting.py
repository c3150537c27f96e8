"""Fitting a calibration map on the fit split: temperature scaling (always) and isotonic regression."""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit

from dhs.evaluation.reliability import CalibrationError, _as_labels, _as_logits, _both_classes

TEMPERATURE_BOUNDS = (1e-2, 1e2)   # a fitted T at either end means the NLL has no interior minimum
LR_CHI2_95 = 3.841                 # 95 % point of chi2 with one degree of freedom


class DegenerateFitError(CalibrationError):
    """The temperature fit has no interior minimum. ``side`` is ``"low"`` (T -> 0: the fit logits are
    (nearly) perfectly separated) or ``"high"`` (T -> infinity: they carry (almost) no information
    about the label, so the best temperature flattens every probability towards 0.5)."""

    def __init__(self, message: str, side: str, bound: float):
        super().__init__(message)
        self.side, self.bound = side, bound


# --------------------------------------------------------------------------- fitting

def fit_temperature(logits, labels) -> float:
    """The temperature T minimising the mean NLL of sigmoid(logits / T) on (logits, labels).

    Searches log T in log(TEMPERATURE_BOUNDS) with bounded Brent. A minimum at a bound means the
    NLL keeps falling (perfectly separated logits drive T -> 0, uninformative ones T -> infinity).
    Where a likelihood-ratio test cannot reject the nearer bound against the fitted T (95 %), no
    temperature is supported by the data and ``DegenerateFitError`` says which side."""
    z = _as_logits(logits, "fit logits")
    y = _as_labels(labels, z.size)
    _both_classes(y, "the fit split")
    lo, hi = math.log(TEMPERATURE_BOUNDS[0]), math.log(TEMPERATURE_BOUNDS[1])

    def nll(log_t: float) -> float:
        u = z * math.exp(-log_t)
        return float(np.mean(np.logaddexp(0.0, u) - y * u))

    res = minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-7})
    if not res.success:
        raise CalibrationError(f"temperature fit did not converge: {res.message}")
    # degenerate when the data cannot tell the fitted T from the nearer search bound: likelihood ratio
    # 2 n (NLL(bound) - NLL(T)) below the 95 % point of chi2(1), 3.84 (or T at the bound itself)
    side = "low" if res.x - lo < hi - res.x else "high"
    edge = lo if side == "low" else hi
    if 2.0 * z.size * (nll(edge) - float(res.fun)) < LR_CHI2_95:
        what = ("the fit logits are (nearly) perfectly separated" if side == "low" else
                "the fit logits carry (almost) no information about the label")
        raise DegenerateFitError(f"the fitted temperature {math.exp(res.x):.3g} cannot be told from the search bound "
                                 f"{math.exp(edge):.3g} (allowed {TEMPERATURE_BOUNDS}): {what}", side, float(math.exp(res.x)))
    return float(math.exp(res.x))


def apply_temperature(logits, temperature: float) -> np.ndarray:
    """sigmoid(logits / temperature)."""
    if not (math.isfinite(temperature) and temperature > 0):
        raise CalibrationError(f"temperature must be finite and > 0, got {temperature!r}")
    return expit(_as_logits(logits) / temperature)


def fit_isotonic(logits, labels) -> tuple[np.ndarray, np.ndarray]:
    """Knots (logit, probability) of the non-decreasing isotonic fit of labels on logits."""
    from sklearn.isotonic import IsotonicRegression

    z = _as_logits(logits, "fit logits")
    y = _as_labels(labels, z.size)
    _both_classes(y, "the fit split")
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(z, y.astype(np.float64))
    return np.asarray(iso.X_thresholds_, np.float64), np.asarray(iso.y_thresholds_, np.float64)


def apply_isotonic(logits, knot_logits, knot_probs) -> np.ndarray:
    """Linear interpolation between the knots, clamped to the end knots outside their range."""
    return np.interp(_as_logits(logits), np.asarray(knot_logits, np.float64), np.asarray(knot_probs, np.float64))
