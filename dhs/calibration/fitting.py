"""Fitting a calibration map on the fit split: temperature scaling (always) and isotonic regression."""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit

from dhs.calibration.reliability import CalibrationError, _as_labels, _as_logits, _both_classes

TEMPERATURE_BOUNDS = (1e-2, 1e2)   # a fitted T at either end means the NLL has no interior minimum


# --------------------------------------------------------------------------- fitting

def fit_temperature(logits, labels) -> float:
    """The temperature T minimising the mean NLL of sigmoid(logits / T) on (logits, labels).

    Searches log T in log(TEMPERATURE_BOUNDS) with bounded Brent. A minimum at a bound means the
    NLL keeps falling (e.g. perfectly separated logits drive T -> 0): that is refused, since no
    temperature is then supported by the data."""
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
    if min(res.x - lo, hi - res.x) < 1e-3:
        raise CalibrationError(f"the fitted temperature sits at the search bound {math.exp(res.x):.3g} "
                               f"(allowed {TEMPERATURE_BOUNDS}): the fit logits are (nearly) perfectly separated or "
                               f"carry no information; use a larger fit split")
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
