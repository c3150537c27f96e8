"""Fitting the selection function: a monotone additive logistic model (a GAM with piecewise-
linear terms) and its region-bootstrap band. numpy + scipy; the evaluation side is
``dhs.selection.function``.

Why this model. P(score > threshold | x) of a CNN finder is smooth in the lens's and source's
properties, rises with the arc's S/N (a brighter arc of the same shape is never harder to find),
and otherwise has no shape physics fixes. An additive logit,

    logit P = b + sum_t f_t(term_t),   f_t piecewise linear on K knots (quantiles of the fit data),

with f_t constrained non-decreasing where ``TERMS`` says so (the implied S/N), a second-difference
penalty on the slopes (smoothness, ``smoothing``) and a small ridge, is a GAM in the sense of Hastie
& Tibshirani (1990): interpretable term by term, fitted by penalised maximum likelihood
(Newton steps as bounded least squares, the monotone constraints as bounds on the increments), cheap enough to refit on every
bootstrap replicate, and exported as a handful of numbers per term. A gradient-boosted model could
follow interactions an additive logit misses, at the cost of a file of trees and a band that
cannot be summarised by components; the held-out validation (``dhs.selection.validate``) measures
what the additive model misses, and theta_E/PSF enters as its own term for the one interaction
the selection function is known for.

Parametrisation. Term t has knots k_0 < ... < k_{K-1} and values c_0 = 0, c_j = sum_{i<=j} d_i;
f_t(x) interpolates (k, c) linearly and is clamped outside (the evaluation refuses those points).
The fit's parameters are the intercept and the increments d (bounded >= 0 for a non-decreasing
term). Values form, [b, c_t1, c_t2, ...], is what the file stores.

Band. Each replicate resamples the evaluation split's sky regions with replacement
(``dhs.evaluation.intervals.bootstrap_multiplicities``), recomputes the threshold on the resampled
controls (so the band carries the threshold's own uncertainty) and refits on the resampled
injections. The replicates' values-form vectors give a covariance; its leading axes in the metric
of the predictions over the fit data (99.9 % of the predictions' variance, at most
``max_components``) are stored, and the band is sigmoid(eta +- z sd).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from dhs.evaluation.thresholds import weighted_threshold_at_fpr
from dhs.params.views import view
from dhs.selection.function import TERMS


@dataclass(frozen=True)
class FitConfig:
    """A view of the fit's keys of the ``selection`` section of params.yaml (each key, its default
    and its check in dhs.params.schema); ``confidence`` is ``completeness.confidence``, the level
    of every interval the stage reports."""
    SECTION: ClassVar[str] = "selection"
    n_knots: int
    smoothing: float              # lambda of the second-difference penalty on slopes (per unit term range)
    ridge: float                  # on the increments
    n_replicates: int
    max_components: int
    confidence: float
    seed: int

    @classmethod
    def from_params(cls, p: Mapping[str, Any] | None, source: str = "params.yaml", *, confidence: float) -> "FitConfig":
        return view(cls, p, source, confidence=confidence)


def choose_knots(values: np.ndarray, n_knots: int) -> np.ndarray:
    """Knots at equally spaced quantiles of the finite values, from min to max (distinct)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size < 2:
        raise ValueError("fewer than 2 finite values to place knots on")
    k = np.unique(np.quantile(v, np.linspace(0.0, 1.0, n_knots)))
    if k.size < 2:
        raise ValueError(f"the values are all {k[0]!r}: a term needs a spread to be fitted")
    return k


class Design:
    """The hat basis of the values form: eta = B @ [b, c_t1, c_t2, ...], and the linear map from
    the fit's increments to the values form (eta = B @ A @ theta)."""

    def __init__(self, knots: Mapping[str, np.ndarray]):
        self.names = list(knots)
        self.knots = {t: np.asarray(knots[t], float) for t in self.names}
        self.offsets = {}
        o = 1
        for t in self.names:
            self.offsets[t] = o
            o += self.knots[t].size
        self.n_values = o
        # increments -> values: intercept passes through; each term's values are the cumsum of [0, d]
        self.n_params = 1 + sum(k.size - 1 for k in self.knots.values())
        A = np.zeros((self.n_values, self.n_params))
        A[0, 0] = 1.0
        p = 1
        for t in self.names:
            K, o = self.knots[t].size, self.offsets[t]
            for j in range(1, K):
                A[o + j:o + K, p + j - 1] = 1.0
            p += K - 1
        self.A = A

    def basis(self, term_values: Mapping[str, np.ndarray]) -> np.ndarray:
        """(n, n_values) hat-basis rows (values clamped to each term's knot range)."""
        n = len(np.asarray(term_values[self.names[0]]))
        B = np.zeros((n, self.n_values))
        B[:, 0] = 1.0
        rows = np.arange(n)
        for t in self.names:
            kn = self.knots[t]
            x = np.clip(np.asarray(term_values[t], float), kn[0], kn[-1])
            j = np.clip(np.searchsorted(kn, x, side="right") - 1, 0, kn.size - 2)
            w = (x - kn[j]) / (kn[j + 1] - kn[j])
            o = self.offsets[t]
            B[rows, o + j] += 1.0 - w
            B[rows, o + j + 1] += w
        return B

    def bounds(self) -> list[tuple[float | None, float | None]]:
        out: list[tuple[float | None, float | None]] = [(None, None)]
        for t in self.names:
            sign = TERMS[t][1]
            out += [(0.0, None) if sign > 0 else (None, 0.0) if sign < 0 else (None, None)] * (self.knots[t].size - 1)
        return out

    def penalty(self, smoothing: float, ridge: float) -> np.ndarray:
        """(n_params, n_params): smoothing x sum_t ||second difference of slopes||^2 + ridge x ||d||^2,
        slopes in logit per unit of the term's knot range."""
        P = np.zeros((self.n_params, self.n_params))
        p = 1
        for t in self.names:
            kn = self.knots[t]
            m = kn.size - 1
            scale = (kn[-1] - kn[0]) / np.diff(kn)           # d_j -> slope per full range
            if m >= 2:
                D = np.diff(np.eye(m), axis=0) * scale[None, :]   # (m-1, m): s_{j+1} - s_j
                P[p:p + m, p:p + m] += smoothing * D.T @ D
            P[p:p + m, p:p + m] += ridge * np.eye(m)
            p += m
        return P

    def values(self, theta: np.ndarray) -> np.ndarray:
        return self.A @ theta


def _objective(X, y, w, P, theta) -> float:
    eta = X @ theta
    return float(w @ (np.logaddexp(0.0, eta) - y * eta) + 0.5 * theta @ P @ theta)


def fit_logistic(X: np.ndarray, y: np.ndarray, w: np.ndarray, P: np.ndarray, bounds, x0: np.ndarray | None = None,
                 max_iter: int = 100, tol: float = 1e-10) -> np.ndarray:
    """argmin_theta sum_i w_i [log(1 + e^eta_i) - y_i eta_i] + theta' P theta / 2, eta = X theta,
    under box ``bounds``: penalised iteratively reweighted least squares, each Newton step a
    bounded least-squares problem in the parameters (scipy's BVLS on the Cholesky factor of the Hessian, exact for box constraints), halved until the
    objective falls; stops when it falls by less than ``tol`` relative."""
    from scipy.optimize import lsq_linear

    w = np.asarray(w, float)
    if w.sum() <= 0:
        raise ValueError("no weight to fit on")
    lb = np.array([-np.inf if b[0] is None else b[0] for b in bounds])
    ub = np.array([np.inf if b[1] is None else b[1] for b in bounds])
    if x0 is None:
        x0 = np.zeros(X.shape[1])
        ybar = float(np.clip((w @ y) / w.sum(), 1e-4, 1 - 1e-4))
        x0[0] = np.log(ybar / (1 - ybar))
    theta = np.clip(x0, lb, ub)
    f = _objective(X, y, w, P, theta)
    keep = w > 0
    Xk, yk, wk = X[keep], y[keep], w[keep]
    jitter = 1e-9 * np.eye(X.shape[1])
    for _ in range(max_iter):
        eta = Xk @ theta
        p = 1.0 / (1.0 + np.exp(-eta))
        W = wk * np.clip(p * (1 - p), 1e-10, None)
        z = eta + (yk - p) / np.clip(p * (1 - p), 1e-10, None)
        H = Xk.T @ (W[:, None] * Xk) + P + jitter             # the Newton step minimises theta'H theta/2 - g'theta
        g = Xk.T @ (W * z)
        R = np.linalg.cholesky(H).T                             # H = R'R: ||R theta - R^-T g||^2 is the same quadratic
        new = lsq_linear(R, np.linalg.solve(R.T, g), bounds=(lb, ub), method="bvls").x
        step = new - theta
        for _half in range(30):
            cand = theta + step
            fc = _objective(X, y, w, P, cand)
            if fc <= f:
                break
            step = step / 2
        else:
            break
        done = f - fc <= tol * max(1.0, abs(f))
        theta, f = cand, fc
        if done:
            break
    return theta


@dataclass
class OperatingPointFit:
    name: str
    fpr: float | None
    threshold: float
    values: np.ndarray            # values form of the fit on all fit-fold data
    replicates: np.ndarray        # (R, n_values) values form of the replicate refits
    thresholds: np.ndarray        # (R,) the replicate thresholds
    scale: np.ndarray             # (k,) principal components of the replicates: sd along each
    components: np.ndarray        # (k, n_values) directions (unit in the predictions' metric over the fit data)
    n_fit: int
    n_pass: int

    def draws(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n, n_values) values-form draws from the Gaussian the band describes."""
        z = rng.standard_normal((n, self.scale.size))
        return self.values[None, :] + (z * self.scale) @ self.components


def principal_components(replicates: np.ndarray, max_components: int, gram: np.ndarray | None = None,
                         keep: float = 0.999) -> tuple[np.ndarray, np.ndarray]:
    """(scale, components): axes of the replicates' covariance, leading ones first, holding ``keep``
    of its variance (at most ``max_components``); replicate deviations ~ sum_k scale_k z_k
    components_k. With ``gram`` (B'B/n of the data the model describes) the axes are those of
    the *predictions'* variance over those data, so truncating drops what changes predictions
    least (terms that trade off against each other move the coefficients a lot and the
    predictions little; a plain principal-component cut of the coefficients keeps those and
    drops what matters)."""
    R, V = replicates.shape
    if R < 2:
        return np.zeros(0), np.zeros((0, V))
    dev = (replicates - replicates.mean(axis=0)) / np.sqrt(R - 1)
    if gram is None:
        M, Minv = np.eye(V), np.eye(V)
    else:
        ev, Q = np.linalg.eigh(gram + 1e-9 * np.trace(gram) / V * np.eye(V))
        M = (Q * np.sqrt(ev)) @ Q.T
        Minv = (Q / np.sqrt(ev)) @ Q.T
    _, s, wt = np.linalg.svd(dev @ M, full_matrices=False)
    var = s**2
    if var.sum() <= 0:
        return np.zeros(0), np.zeros((0, V))
    k = int(np.searchsorted(np.cumsum(var) / var.sum(), keep) + 1)
    k = max(1, min(k, max_components, s.size))
    comps = wt[:k] @ Minv                     # back to coefficient (values-form) space
    return s[:k], comps


def fit_operating_point(design: Design, B: np.ndarray, scores: np.ndarray, region_index: np.ndarray,
                        control_scores: np.ndarray, control_region_index: np.ndarray, n_regions: int,
                        name: str, fpr: float | None, threshold: float, cfg: FitConfig,
                        multiplicities: np.ndarray) -> OperatingPointFit:
    """Fit one operating point (pass: score > threshold) on the fit-fold injections (rows of B),
    then refit on each region-bootstrap replicate (``multiplicities``: (R, n_regions) over the
    evaluation split's regions; the threshold recomputed on the replicate's controls at ``fpr``,
    or kept where ``fpr`` is None, a fixed score)."""
    X = B @ design.A
    P = design.penalty(cfg.smoothing, cfg.ridge)
    bounds = design.bounds()
    y = (scores > threshold).astype(float)
    theta = fit_logistic(X, y, np.ones(len(y)), P, bounds)
    reps, ts = [], []
    for m in multiplicities:
        wc = m[control_region_index]
        t = threshold if fpr is None or wc.sum() <= 0 else weighted_threshold_at_fpr(control_scores, wc, fpr)
        wi = m[region_index]
        if wi.sum() <= 0:
            continue
        yr = (scores > t).astype(float)
        reps.append(design.values(fit_logistic(X, yr, wi, P, bounds, x0=theta)))
        ts.append(t)
    reps_a = np.array(reps) if reps else np.zeros((0, design.n_values))
    scale, comps = principal_components(reps_a, cfg.max_components, gram=B.T @ B / len(B))
    return OperatingPointFit(name, fpr, float(threshold), design.values(theta), reps_a, np.array(ts), scale, comps,
                             int(len(y)), int(y.sum()))


def term_ranges(term_values: Mapping[str, np.ndarray]) -> dict[str, tuple[float, float]]:
    return {t: (float(np.nanmin(v)), float(np.nanmax(v))) for t, v in term_values.items()}


def operating_point_doc(design: Design, fit: OperatingPointFit, confidence: float) -> dict:
    """The file's entry for one operating point (``dhs.selection.function``'s layout)."""
    from scipy.stats import norm
    v = fit.values
    comps = fit.components
    return {
        "name": fit.name, "fpr": fit.fpr, "threshold": fit.threshold, "n_fit": fit.n_fit, "n_pass": fit.n_pass,
        "n_replicates": int(fit.replicates.shape[0]),
        "threshold_replicates_range": [float(fit.thresholds.min()), float(fit.thresholds.max())] if fit.thresholds.size else None,
        "intercept": float(v[0]),
        "terms": {t: {"knots": design.knots[t].tolist(), "values": v[design.offsets[t]:design.offsets[t] + design.knots[t].size].tolist()}
                  for t in design.names},
        "band": {"confidence": confidence, "z": float(norm.ppf(0.5 + confidence / 2)), "scale": fit.scale.tolist(),
                 "intercept": comps[:, 0].tolist(),
                 "terms": {t: comps[:, design.offsets[t]:design.offsets[t] + design.knots[t].size].tolist() for t in design.names}},
    }


def eta_sd(B: np.ndarray, fit: OperatingPointFit) -> tuple[np.ndarray, np.ndarray]:
    """The logit and its band's sd at the rows of B (the same numbers the file gives)."""
    eta = B @ fit.values
    sd = np.sqrt((((B @ fit.components.T) * fit.scale) ** 2).sum(axis=1)) if fit.scale.size else np.zeros(len(eta))
    return eta, sd


def in_range(term_values: Mapping[str, np.ndarray], inputs: Mapping[str, np.ndarray],
             term_range: Mapping[str, tuple[float, float]], input_range: Mapping[str, tuple[float, float]]) -> np.ndarray:
    ok = None
    for src, rng_ in ((inputs, input_range), (term_values, term_range)):
        for k, (lo, hi) in rng_.items():
            v = np.asarray(src[k], float)
            o = (v >= lo) & (v <= hi)
            ok = o if ok is None else ok & o
    return ok


def design_for(term_values: Mapping[str, np.ndarray], n_knots: int, names: Sequence[str] | None = None) -> Design:
    names = list(TERMS) if names is None else list(names)
    return Design({t: choose_knots(term_values[t], n_knots) for t in names})
