"""Calibration of lens-finder scores: reliability, ECE/MCE/Brier/log loss, temperature scaling,
isotonic regression, and the move from training prevalence to survey prevalence.

Conventions (every function below follows them):

- ``labels``: 1 = injection (lens), 0 = control. ``probs`` are P(label = 1) in [0, 1];
  ``logits`` are natural-log odds, probs = sigmoid(logits).
- Reliability bins: bin b holds probs in [e_b, e_b+1), the last bin is closed [e_B-1, e_B].
  ``uniform``: B equal-width bins on [0, 1]. ``quantile``: edges at the quantiles of the probs
  (equal counts up to ties; coinciding edges are merged, so ties can leave fewer than B bins).
- ECE = sum_b (n_b / N) |o_b - c_b| with o_b the observed fraction of label 1 in bin b and c_b
  the mean predicted probability there; MCE = max over non-empty bins of |o_b - c_b|.
- Brier = mean (p - y)^2. Log loss = -mean[y ln p + (1 - y) ln(1 - p)] with p clipped to
  [eps, 1 - eps], eps = 1e-15 (isotonic outputs can be exactly 0 or 1).
- Temperature scaling (Guo et al. 2017): p = sigmoid(z / T), one parameter T > 0 fitted by
  minimising the mean negative log-likelihood on the fit split over log T (bounded Brent search;
  the NLL is convex in 1/T, so the minimum is unique). T > 1 softens over-confident logits.
- Isotonic: a non-decreasing map from logit to probability fitted on the fit split
  (scikit-learn ``IsotonicRegression``), stored as knots, applied by linear interpolation and
  clamped outside the knots.
- Prevalence: a calibrated classifier outputs posteriors at the lens fraction ``pi_train`` of the
  set it was calibrated on. The likelihood ratio does not depend on prevalence, so by Bayes' rule
  at survey prevalence pi_s: logit_s = logit_train + log(pi_s/(1-pi_s)) - log(pi_train/(1-pi_train)).
- Purity of a threshold with rates (TPR, FPR) at prevalence pi:
  TPR pi / (TPR pi + FPR (1 - pi)). Thresholds come from ``dhs.evaluation.thresholds.threshold_at_fpr``
  (pass: score > threshold), exactly as in the completeness stage, so the numbers agree.

The calibrator of an arch is ``data/calibration/{arch}/calibrator.json``. This is "next to the
model": the train stage owns ``data/models/{arch}`` as a DVC output and DVC forbids overlapping
outputs, so the calibrator lives in its own directory and records the checkpoint (path and
SHA-256) it belongs to.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, logit

from dhs import atomic
from dhs.params import ParamsError
from dhs.evaluation.scores import SCORE_SPLITS
from dhs.evaluation.thresholds import threshold_at_fpr

METHODS = ("temperature", "isotonic")
STRATEGIES = ("uniform", "quantile")
LOG_LOSS_EPS = 1e-15
TEMPERATURE_BOUNDS = (1e-2, 1e2)   # a fitted T at either end means the NLL has no interior minimum
CALIBRATOR_FORMAT = "dhs-calibrator/1"


class CalibrationError(ValueError):
    pass


# --------------------------------------------------------------------------- input checks

def _as_probs(probs, name: str = "probs") -> np.ndarray:
    """1-D float64 probabilities in [0, 1]; refuses empty, NaN and out-of-range values."""
    p = np.asarray(probs, dtype=np.float64).ravel()
    if p.size == 0:
        raise CalibrationError(f"{name} is empty: calibration needs at least one scored stamp")
    if not np.isfinite(p).all():
        raise CalibrationError(f"{name}: {int((~np.isfinite(p)).sum())} value(s) are NaN or Inf")
    if p.min() < 0.0 or p.max() > 1.0:
        raise CalibrationError(f"{name} must lie in [0, 1] (probabilities, not logits); found range [{p.min():g}, {p.max():g}]")
    return p


def _as_logits(logits, name: str = "logits") -> np.ndarray:
    """1-D float64 finite logits; refuses empty input."""
    z = np.asarray(logits, dtype=np.float64).ravel()
    if z.size == 0:
        raise CalibrationError(f"{name} is empty: calibration needs at least one scored stamp")
    if not np.isfinite(z).all():
        raise CalibrationError(f"{name}: {int((~np.isfinite(z)).sum())} value(s) are NaN or Inf; the model or its input is broken")
    return z


def _as_labels(labels, n: int) -> np.ndarray:
    """1-D int8 labels in {0, 1} of length ``n``."""
    y = np.asarray(labels).ravel()
    if y.shape != (n,):
        raise CalibrationError(f"labels: {y.size} labels for {n} predictions; they must be aligned row by row")
    if not np.isin(y, (0, 1)).all():
        raise CalibrationError(f"labels must be 0 (control) or 1 (injection); found {sorted(set(np.unique(y).tolist()) - {0, 1})[:5]}")
    return y.astype(np.int8)


def _both_classes(y: np.ndarray, what: str) -> None:
    n1 = int(y.sum())
    if n1 == 0 or n1 == y.size:
        only = "injections" if n1 else "controls"
        raise CalibrationError(f"{what} holds only {only} ({y.size} rows); fitting and judging calibration needs both injections and controls")


def _prevalence(pi: float, name: str) -> float:
    if isinstance(pi, bool) or not isinstance(pi, (int, float, np.integer, np.floating)) or not 0.0 < float(pi) < 1.0:
        raise CalibrationError(f"{name} must be a prevalence strictly between 0 and 1, got {pi!r}")
    return float(pi)


# --------------------------------------------------------------------------- reliability and scores

@dataclass(frozen=True)
class ReliabilityCurve:
    """Per-bin reliability; ``mean_predicted`` and ``observed_fraction`` are NaN in empty bins."""
    strategy: str
    edges: np.ndarray             # n_bins + 1 edges, probability units
    count: np.ndarray             # stamps per bin
    mean_predicted: np.ndarray    # c_b
    observed_fraction: np.ndarray # o_b, fraction of injections

    @property
    def n_bins(self) -> int:
        return int(self.count.size)

    @property
    def ece(self) -> float:
        filled = self.count > 0
        gap = np.abs(self.observed_fraction[filled] - self.mean_predicted[filled])
        return float(np.sum(self.count[filled] * gap) / self.count.sum())

    @property
    def mce(self) -> float:
        filled = self.count > 0
        return float(np.max(np.abs(self.observed_fraction[filled] - self.mean_predicted[filled])))


def bin_edges(probs, n_bins: int, strategy: str) -> np.ndarray:
    """Bin edges in probability: ``uniform`` on [0, 1], ``quantile`` at the quantiles of ``probs``
    (coinciding edges merged, so at least 1 and at most ``n_bins`` bins)."""
    if strategy not in STRATEGIES:
        raise CalibrationError(f"strategy must be one of {list(STRATEGIES)}, got {strategy!r}")
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise CalibrationError(f"n_bins must be a positive integer, got {n_bins!r}")
    if strategy == "uniform":
        return np.linspace(0.0, 1.0, int(n_bins) + 1)
    p = _as_probs(probs)
    edges = np.unique(np.quantile(p, np.linspace(0.0, 1.0, int(n_bins) + 1)))
    return edges if edges.size > 1 else np.array([edges[0], edges[0]])


def reliability_curve(probs, labels, n_bins: int = 15, strategy: str = "uniform") -> ReliabilityCurve:
    """Count, mean predicted probability and observed injection fraction per bin (see module
    conventions for the bin edges)."""
    p = _as_probs(probs)
    y = _as_labels(labels, p.size)
    edges = bin_edges(p, n_bins, strategy)
    idx = np.searchsorted(edges[1:-1], p, side="right")
    k = edges.size - 1
    count = np.bincount(idx, minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_pred = np.bincount(idx, weights=p, minlength=k) / count
        observed = np.bincount(idx, weights=y.astype(np.float64), minlength=k) / count
    return ReliabilityCurve(strategy, edges, count, mean_pred, observed)


def ece(probs, labels, n_bins: int = 15, strategy: str = "uniform") -> float:
    """Expected calibration error: count-weighted mean |observed - predicted| over bins."""
    return reliability_curve(probs, labels, n_bins, strategy).ece


def mce(probs, labels, n_bins: int = 15, strategy: str = "uniform") -> float:
    """Maximum calibration error: the largest |observed - predicted| over non-empty bins."""
    return reliability_curve(probs, labels, n_bins, strategy).mce


def brier_score(probs, labels) -> float:
    """Mean squared difference between probability and label (0 is perfect, 0.25 is a coin)."""
    p = _as_probs(probs)
    y = _as_labels(labels, p.size)
    return float(np.mean((p - y) ** 2))


def log_loss(probs, labels, eps: float = LOG_LOSS_EPS) -> float:
    """Mean negative log-likelihood in nats, probs clipped to [eps, 1 - eps]."""
    if not 0.0 < eps < 0.5:
        raise CalibrationError(f"eps must lie in (0, 0.5), got {eps!r}")
    p = np.clip(_as_probs(probs), eps, 1.0 - eps)
    y = _as_labels(labels, p.size)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def nll_from_logits(logits, labels) -> float:
    """Mean negative log-likelihood in nats of sigmoid(logits), computed stably from the logits:
    mean[log(1 + e^z) - y z]."""
    z = _as_logits(logits)
    y = _as_labels(labels, z.size)
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def calibration_summary(probs, labels, n_bins: int, strategies: Sequence[str]) -> dict[str, float]:
    """ECE and MCE per strategy, Brier score and log loss, keyed ``ece_<strategy>`` etc."""
    out: dict[str, float] = {}
    for s in strategies:
        curve = reliability_curve(probs, labels, n_bins, s)
        out[f"ece_{s}"] = curve.ece
        out[f"mce_{s}"] = curve.mce
    out["brier"] = brier_score(probs, labels)
    out["log_loss"] = log_loss(probs, labels)
    return out


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


# --------------------------------------------------------------------------- the calibrator

@dataclass(frozen=True)
class Calibrator:
    """A fitted calibration map from raw logits to P(lens) at the fit split's prevalence.

    ``temperature`` is always fitted, also when ``method`` is isotonic, so every consumer can use
    it. ``pi_train`` is the injection fraction of the fit split (the prevalence at which the
    calibrated probabilities are posteriors). ``checkpoint``/``checkpoint_sha256`` name the model
    whose logits it calibrates."""
    method: str
    temperature: float
    pi_train: float
    checkpoint: str
    checkpoint_sha256: str
    fit_split: str
    n_fit: int
    isotonic_logits: tuple[float, ...] = ()
    isotonic_probs: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise CalibrationError(f"calibrator method must be one of {list(METHODS)}, got {self.method!r}")
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature) and self.temperature > 0):
            raise CalibrationError(f"calibrator temperature must be finite and > 0, got {self.temperature!r}")
        _prevalence(self.pi_train, "calibrator pi_train")
        x, p = np.asarray(self.isotonic_logits, np.float64), np.asarray(self.isotonic_probs, np.float64)
        if self.method == "isotonic":
            if x.size == 0 or x.shape != p.shape:
                raise CalibrationError(f"an isotonic calibrator needs equally many knot logits and probabilities (got {x.size} and {p.size})")
            if np.any(np.diff(x) < 0) or np.any(np.diff(p) < 0) or p.min() < 0 or p.max() > 1:
                raise CalibrationError("isotonic knots must be non-decreasing in logit and probability, with probabilities in [0, 1]")
        elif x.size or p.size:
            raise CalibrationError("a temperature calibrator carries no isotonic knots")

    def probabilities(self, logits) -> np.ndarray:
        """Calibrated P(lens) of raw model logits, at prevalence ``pi_train``."""
        if self.method == "isotonic":
            return apply_isotonic(logits, self.isotonic_logits, self.isotonic_probs)
        return apply_temperature(logits, self.temperature)

    def temperature_probabilities(self, logits) -> np.ndarray:
        """sigmoid(logits / T), whatever ``method`` is."""
        return apply_temperature(logits, self.temperature)

    def probabilities_at_prevalence(self, logits, pi_survey: float) -> np.ndarray:
        """Calibrated posteriors moved from ``pi_train`` to ``pi_survey`` (Bayes' rule)."""
        return posterior_at_prevalence(self.probabilities(logits), self.pi_train, pi_survey)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["isotonic_logits"] = list(self.isotonic_logits)
        d["isotonic_probs"] = list(self.isotonic_probs)
        return {"format": CALIBRATOR_FORMAT, **d}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "calibrator") -> "Calibrator":
        if d.get("format") != CALIBRATOR_FORMAT:
            raise CalibrationError(f"{source}: format {d.get('format')!r} is not {CALIBRATOR_FORMAT!r}; rerun `dvc repro calibration`")
        fields = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(fields - {"isotonic_logits", "isotonic_probs"} - set(d))
        if missing:
            raise CalibrationError(f"{source}: missing field(s) {missing}; rerun `dvc repro calibration`")
        kw = {k: d[k] for k in fields if k in d}
        kw["isotonic_logits"] = tuple(float(v) for v in kw.get("isotonic_logits", ()))
        kw["isotonic_probs"] = tuple(float(v) for v in kw.get("isotonic_probs", ()))
        return cls(**kw)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_calibrator(path: str | Path, calibrator: Calibrator) -> None:
    """Write ``calibrator`` as JSON atomically (usually data/calibration/{arch}/calibrator.json)."""
    atomic.write_json(path, calibrator.to_dict())


def load_calibrator(path: str | Path) -> Calibrator:
    """The calibrator saved at ``path``; use ``.probabilities(logits)`` on raw model logits."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"{path} not found; run `dvc repro calibration` first")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CalibrationError(f"{path} is not valid JSON ({exc}); rerun `dvc repro calibration`") from None
    return Calibrator.from_dict(d, str(path))


# --------------------------------------------------------------------------- params

def _number(v: Any, key: str, source: str) -> float:
    if isinstance(v, str):
        raise ParamsError(f"{source}: calibration.{key} is the string {v!r}; YAML reads 1e-3 as text, write 1.0e-3")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ParamsError(f"{source}: calibration.{key} must be a finite number, got {v!r}")
    return float(v)


def _rate(v: Any, key: str, source: str) -> float:
    x = _number(v, key, source)
    if not 0.0 < x < 1.0:
        raise ParamsError(f"{source}: calibration.{key} must lie strictly between 0 and 1, got {v!r}")
    return x


@dataclass(frozen=True)
class CalibrationConfig:
    """The ``calibration`` section of params.yaml (see the stage docstring for each key)."""
    method: str = "temperature"
    n_bins: int = 15
    strategies: tuple[str, ...] = STRATEGIES
    fit_split: str = "val"
    eval_split: str = "test"
    survey_prevalence: float = 1e-3
    fprs: tuple[float, ...] = (0.1, 0.01, 0.001)
    min_expected_controls: float = 10.0

    @classmethod
    def keys(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    @classmethod
    def from_params(cls, p: Mapping[str, Any] | None, source: str = "params.yaml") -> "CalibrationConfig":
        p = dict(p or {})
        unknown = sorted(set(p) - cls.keys())
        if unknown:
            raise ParamsError(f"{source}: unknown keys {unknown} in 'calibration'; allowed keys are {sorted(cls.keys())}")
        d = cls()
        method = p.get("method", d.method)
        if method not in METHODS:
            raise ParamsError(f"{source}: calibration.method must be one of {list(METHODS)}, got {method!r}")
        n_bins = p.get("n_bins", d.n_bins)
        if isinstance(n_bins, bool) or not isinstance(n_bins, int) or not 2 <= n_bins <= 1000:
            raise ParamsError(f"{source}: calibration.n_bins must be an integer in [2, 1000] (15-20 is the convention), got {n_bins!r}")
        strategies = p.get("strategies", list(d.strategies))
        if not isinstance(strategies, (list, tuple)) or not strategies or any(s not in STRATEGIES for s in strategies) \
                or len(set(strategies)) != len(strategies):
            raise ParamsError(f"{source}: calibration.strategies must be a non-empty list of distinct values from {list(STRATEGIES)}, got {strategies!r}")
        splits = {}
        for key in ("fit_split", "eval_split"):
            splits[key] = p.get(key, getattr(d, key))
            if splits[key] not in SCORE_SPLITS:
                raise ParamsError(f"{source}: calibration.{key} must be one of {list(SCORE_SPLITS)}, got {splits[key]!r}")
        if splits["fit_split"] == splits["eval_split"]:
            raise ParamsError(f"{source}: calibration.fit_split and eval_split are both {splits['fit_split']!r}; "
                              f"a calibration judged on the split it was fitted on is optimistic: fit on val, evaluate on test")
        fprs = p.get("fprs", list(d.fprs))
        if not isinstance(fprs, (list, tuple)) or not fprs:
            raise ParamsError(f"{source}: calibration.fprs must be a non-empty list of false-positive rates in (0, 1), got {fprs!r}")
        fprs = tuple(_rate(f, "fprs", source) for f in fprs)
        if len(set(fprs)) != len(fprs):
            raise ParamsError(f"{source}: calibration.fprs lists a rate more than once: {list(fprs)}")
        min_exp = _number(p.get("min_expected_controls", d.min_expected_controls), "min_expected_controls", source)
        if min_exp < 0:
            raise ParamsError(f"{source}: calibration.min_expected_controls must be >= 0, got {min_exp!r}")
        return cls(method=method, n_bins=n_bins, strategies=tuple(strategies), fit_split=splits["fit_split"],
                   eval_split=splits["eval_split"], survey_prevalence=_rate(p.get("survey_prevalence", d.survey_prevalence), "survey_prevalence", source),
                   fprs=fprs, min_expected_controls=min_exp)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["strategies"], d["fprs"] = list(self.strategies), list(self.fprs)
        return d
