"""Reliability curves and the scores of calibration: ECE, MCE, Brier, log loss, NLL; and the input
checks every calibration function applies (see the package docstring for the conventions)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dhs.errors import StageError
from dhs.params.schema import RELIABILITY_STRATEGIES

LOG_LOSS_EPS = 1e-15


class CalibrationError(StageError, ValueError):
    pass


# --------------------------------------------------------------------------- input checks

def _finite(values, name: str, hint: str = "") -> np.ndarray:
    """1-D float64 finite values; refuses empty input and NaN or Inf."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise CalibrationError(f"{name} is empty: calibration needs at least one scored stamp")
    if not np.isfinite(x).all():
        raise CalibrationError(f"{name}: {int((~np.isfinite(x)).sum())} value(s) are NaN or Inf{hint}")
    return x


def _as_probs(probs, name: str = "probs") -> np.ndarray:
    """1-D float64 probabilities in [0, 1]; refuses empty, NaN and out-of-range values."""
    p = _finite(probs, name)
    if p.min() < 0.0 or p.max() > 1.0:
        raise CalibrationError(f"{name} must lie in [0, 1] (probabilities, not logits); found range [{p.min():g}, {p.max():g}]")
    return p


def _as_logits(logits, name: str = "logits") -> np.ndarray:
    """1-D float64 finite logits; refuses empty input."""
    return _finite(logits, name, "; the model or its input is broken")


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
    if strategy not in RELIABILITY_STRATEGIES:
        raise CalibrationError(f"strategy must be one of {list(RELIABILITY_STRATEGIES)}, got {strategy!r}")
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
