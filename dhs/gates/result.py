"""The result record every gate returns, how a gate decides, and how results combine.

A gate result is a plain dict (it goes straight into ``metrics/gates/{arch}.json``)::

    {"name": str, "status": "PASS" | "FAIL" | "SKIP", "passed": bool,
     "value": float | None,           # the number the threshold applies to
     "value_ci95": [lo, hi] | None,   # its 95% interval, from the rows the gate measured
     "threshold": float | None,       # from params.yaml ``gates``
     "n": int | None,                 # rows the value was measured on
     "rule": str,                     # the limit and the decision, in words
     "decision": str,                 # inside | inside, interval straddles | consistent with the limit | beyond | value only
     "detail": str,                   # one sentence a user can act on
     ...}                             # further named values (counts, the other AUCs, per-part intervals)

How a gate decides (``decide``): a statistic measured on a finite sample is noisy, and a verdict
read off the point value flips with the sample size. So a gate FAILs only when the whole 95%
interval of its statistic lies on the wrong side of the allowed value (for an upper limit: the
lower bound is beyond it), and PASSes otherwise; the detail says whether the value itself lies
within the limit or only its interval reaches back across it ("consistent with the limit").
The intervals are percentile bootstraps over the rows the gate already has (``bootstrap_rows``:
resampled within each class, so every resample keeps both); a difference of two statistics
measured on the same rows (an AUROC before and after a change) is bootstrapped paired, both on
the same resample (``auc_drop_with_ci``), which removes the rows' shared variation from the
interval. With ``gates.n_bootstrap: 0`` there is no interval: the gate decides on the value
alone and says so.

SKIP means the gate could not be evaluated (missing input, or fewer rows of a class than
``gates.min_rows_per_class``, ``enough_rows``). It is not a pass: ``all_passed`` is true only
when every gate is PASS, and ``gates.enforce`` stops on SKIP too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dhs.evaluation.auc import auroc, bootstrap_auroc

STATUSES = ("PASS", "FAIL", "SKIP")
# the default of gates.min_rows_per_class: below it a gate SKIPs. The 95% interval of an AUC near
# 0.5 with n rows per class is about +-1.96 sqrt((2n + 1) / (12 n^2)) (Hanley & McNeil 1982):
# +-0.146 at 30, narrower than the 0.15 between chance and core_auc_max (0.65), so a classifier at
# chance can be told from one at the limit; at 20 it is +-0.18
MIN_ROWS_PER_CLASS = 30
# what ``decide`` found, worst first
BEYOND, VALUE_ONLY, CONSISTENT, STRADDLES, INSIDE = ("beyond", "value only", "consistent with the limit",
                                                     "inside, interval straddles", "inside")
DECISIONS = (BEYOND, VALUE_ONLY, CONSISTENT, STRADDLES, INSIDE)
BOOTSTRAP_STREAM = 7   # default_rng([seed, 7]): the stream dhs.evaluation.auc.bootstrap_auroc draws from


def _clean(v: Any) -> Any:
    if isinstance(v, (np.floating, float)):
        return None if not math.isfinite(float(v)) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_clean(x) for x in v]
    return v


def gate_result(name: str, status: str, value: float | None, threshold: float | None, rule: str, detail: str, **values: Any) -> dict:
    if status not in STATUSES:
        raise ValueError(f"gate status must be one of {STATUSES}, got {status!r}")
    return _clean({"name": name, "status": status, "passed": status == "PASS", "value": value, "threshold": threshold,
                   "rule": rule, "detail": detail, **values})


def skipped(name: str, threshold: float | None, rule: str, why: str, **values: Any) -> dict:
    return gate_result(name, "SKIP", None, threshold, rule, f"not evaluated: {why}", **values)


def tally_verdicts(results: Sequence[dict]) -> dict:
    """{all_passed, n_pass, n_fail, n_skip, failed: [names], skipped: [names]}."""
    by = {s: [r["name"] for r in results if r["status"] == s] for s in STATUSES}
    return {"all_passed": bool(results) and not by["FAIL"] and not by["SKIP"], "n_pass": len(by["PASS"]),
            "n_fail": len(by["FAIL"]), "n_skip": len(by["SKIP"]), "failed": by["FAIL"], "skipped": by["SKIP"]}


# --------------------------------------------------------------------------- intervals

def ci95(samples: Sequence[float] | np.ndarray) -> list[float] | None:
    """Percentile 95% interval of bootstrap replicates (None without any). Replicates may be
    infinite (a ratio over a resample with a zero denominator): then the interval takes
    replicate values (no interpolation), never inf - inf."""
    x = np.asarray(samples, dtype=np.float64)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return None
    if np.isfinite(x).all():
        lo, hi = np.percentile(x, [2.5, 97.5])
    else:
        lo, hi = np.percentile(x, 2.5, method="lower"), np.percentile(x, 97.5, method="higher")
    return [float(lo), float(hi)]


def bootstrap_rows(y: np.ndarray, n_bootstrap: int, seed: int, stream: int = BOOTSTRAP_STREAM) -> list[np.ndarray]:
    """``n_bootstrap`` row resamples (with replacement) of labels ``y``, drawn within each class
    (stratified) from ``default_rng([seed, stream])``; one class only: plain row resamples."""
    y = np.asarray(y)
    rng = np.random.default_rng([seed, stream])
    classes = [np.flatnonzero(y == c) for c in np.unique(y)]
    return [np.concatenate([rng.choice(c, c.size) for c in classes]) for _ in range(n_bootstrap)]


def auc_with_ci(y: np.ndarray, s: np.ndarray, n_bootstrap: int, seed: int) -> tuple[float, list[float] | None]:
    """ROC AUC of scores ``s`` for binary labels ``y`` and its 95% percentile-bootstrap interval
    (rows resampled with replacement, stratified by class so every resample has both)."""
    return auroc(y, s), bootstrap_auroc(y, s, None, n_bootstrap, seed, unit="stratified")["ci95"]


def aucs_on(rows: Sequence[np.ndarray], y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """The AUROC of ``s`` on each resample of ``rows`` (``bootstrap_rows``): replicates to pair."""
    y, s = np.asarray(y), np.asarray(s, np.float64)
    return np.array([auroc(y[i], s[i]) for i in rows])


def paired_aucs(y: np.ndarray, before: np.ndarray, after: np.ndarray, n_bootstrap: int, seed: int) -> dict[str, Any]:
    """AUROC of two scorings of the same rows, before and after a change, and the drop
    before - after, each with its 95% interval, all from one set of stratified row resamples
    (each resample gives both AUROCs, so the drop's interval is the paired one). Keys: auc_before,
    auc_before_ci95, auc_after, auc_after_ci95, drop, drop_ci95."""
    y, before, after = np.asarray(y), np.asarray(before, np.float64), np.asarray(after, np.float64)
    b, a = auroc(y, before), auroc(y, after)
    out: dict[str, Any] = {"auc_before": b, "auc_before_ci95": None, "auc_after": a, "auc_after_ci95": None,
                           "drop": b - a, "drop_ci95": None}
    if n_bootstrap:
        rows = bootstrap_rows(y, n_bootstrap, seed)
        rb, ra = aucs_on(rows, y, before), aucs_on(rows, y, after)
        out.update(auc_before_ci95=ci95(rb), auc_after_ci95=ci95(ra), drop_ci95=ci95(rb - ra))
    return out


def auc_drop_with_ci(y: np.ndarray, before: np.ndarray, after: np.ndarray, n_bootstrap: int, seed: int,
                     paired: bool = True) -> tuple[float, list[float] | None]:
    """AUROC(before) - AUROC(after) of two scorings of the same rows, and its 95% interval.

    ``paired`` (what the gates use, ``paired_aucs``): each resample of rows gives both AUROCs, so
    what the two scorings share (which stamps happened to be drawn) cancels in the drop.
    ``paired=False`` resamples the two scorings independently (the interval of a drop between
    unrelated samples, wider when the scorings are correlated); it is there to compare against."""
    if paired:
        r = paired_aucs(y, before, after, n_bootstrap, seed)
        return r["drop"], r["drop_ci95"]
    y, before, after = np.asarray(y), np.asarray(before, np.float64), np.asarray(after, np.float64)
    drop = auroc(y, before) - auroc(y, after)
    if n_bootstrap == 0:
        return drop, None
    rb = aucs_on(bootstrap_rows(y, n_bootstrap, seed), y, before)
    ra = aucs_on(bootstrap_rows(y, n_bootstrap, seed, stream=BOOTSTRAP_STREAM + 1), y, after)
    return drop, ci95(rb - ra)


def median_difference_with_ci(a: np.ndarray, b: np.ndarray, n_bootstrap: int, seed: int) -> tuple[float, list[float] | None]:
    """median(a) - median(b) of two per-row quantities of the same rows, and its paired 95%
    bootstrap interval (rows resampled, both medians on each resample)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    value = float(np.median(a) - np.median(b))
    if n_bootstrap == 0:
        return value, None
    rows = bootstrap_rows(np.zeros(len(a)), n_bootstrap, seed)
    return value, ci95([np.median(a[i]) - np.median(b[i]) for i in rows])


def count_ratio_with_ci(after: np.ndarray, before: np.ndarray, n_bootstrap: int, seed: int) -> tuple[float, list[float] | None]:
    """sum(after) / sum(before) of two boolean flags of the same rows (e.g. a control above a
    threshold after and before a change), 1 when both sums are 0, inf when only ``before`` sums
    to 0; and its paired 95% bootstrap interval (rows resampled, both counts on each resample)."""
    a, b = np.asarray(after, bool), np.asarray(before, bool)

    def ratio(k1: int, k0: int) -> float:
        return k1 / k0 if k0 else (math.inf if k1 else 1.0)

    value = ratio(int(a.sum()), int(b.sum()))
    if n_bootstrap == 0:
        return value, None
    rows = bootstrap_rows(np.zeros(len(a)), n_bootstrap, seed, stream=BOOTSTRAP_STREAM + 2)
    return value, ci95([ratio(int(a[i].sum()), int(b[i].sum())) for i in rows])


# --------------------------------------------------------------------------- the decision

@dataclass(frozen=True)
class Limit:
    """The allowed side of a gate's threshold: ``value < threshold`` (upper, strict), ``<=``
    (upper, not strict), ``>=`` / ``>`` (lower). ``key``: the params key holding the threshold."""

    key: str
    threshold: float
    upper: bool = True
    strict: bool = True

    @property
    def op(self) -> str:
        return ("<" if self.strict else "<=") if self.upper else (">" if self.strict else ">=")

    def allows(self, x: float) -> bool:
        t = self.threshold
        if self.upper:
            return x < t if self.strict else x <= t
        return x > t if self.strict else x >= t

    def rule(self, statistic: str) -> str:
        """The rule in words: the limit, and when the interval makes it FAIL."""
        end = "lower" if self.upper else "upper"
        return (f"{statistic} {self.op} {self.key}; FAIL only when its whole 95% interval lies beyond the limit "
                f"(its {end} bound not {self.op} {self.key}); without an interval, the value alone")


def decide(value: float, ci: Sequence[float] | None, limit: Limit, fmt: str = ".3f",
           more_rows: str = "gates.n_eval", no_ci: str = "gates.n_bootstrap is 0") -> tuple[str, str, str]:
    """(status, decision, sentence) for ``value`` and its 95% interval ``ci`` against ``limit``.

    FAIL when the whole interval lies beyond the limit; PASS otherwise. ``decision``: ``inside``
    (value and interval within), ``inside, interval straddles`` (the value within, the interval
    reaching beyond), ``consistent with the limit`` (the value beyond, the interval reaching back
    within: the sample cannot tell it from an allowed one), ``beyond`` (FAIL), ``value only`` (no
    interval: the value decides). ``more_rows``: the key that buys a narrower interval; ``no_ci``:
    why there is no interval."""
    v = format(value, fmt)
    lim = f"{limit.op} {format(limit.threshold, fmt)} ({limit.key})"
    if ci is None or any(x is None for x in ci):
        ok = limit.allows(value)
        return ("PASS" if ok else "FAIL", VALUE_ONLY,
                f"no 95% interval ({no_ci}), so the value {v} alone decides: "
                + ("within the limit" if ok else "beyond the limit") + f" {lim}")
    lo, hi = float(ci[0]), float(ci[1])
    near, far = (lo, hi) if limit.upper else (hi, lo)   # near: the end closest to the allowed side
    iv = f"95% interval [{format(lo, fmt)}, {format(hi, fmt)}]"
    if not limit.allows(near):
        return "FAIL", BEYOND, f"the value {v} and its whole {iv} lie beyond the limit {lim}"
    if limit.allows(value):
        if limit.allows(far):
            return "PASS", INSIDE, f"the value {v} and its whole {iv} lie within the limit {lim}"
        return ("PASS", STRADDLES,
                f"the value {v} lies within the limit {lim}; its {iv} reaches beyond it ({more_rows} narrows it)")
    return ("PASS", CONSISTENT,
            f"the value {v} lies beyond the limit {lim} but its {iv} reaches back within it: consistent with the limit "
            f"at this sample size (raise {more_rows} to resolve it)")


MORE_TEST_ROWS = "gates.n_eval (0 = every test stamp) or use a larger test split"


def too_few(counts: str, minimum: int, more: str = MORE_TEST_ROWS) -> str:
    """The reason to SKIP: the counts, the minimum and its key, and what to raise."""
    return f"{counts}; the gate decides on >= {minimum} of each (gates.min_rows_per_class): raise {more}"


def enough_rows(y: np.ndarray, minimum: int = MIN_ROWS_PER_CLASS, more: str = MORE_TEST_ROWS,
                what: tuple[str, str] = ("positive", "negative")) -> str | None:
    """None if both classes have >= minimum rows, else the reason to SKIP (``too_few``)."""
    n1, n0 = int((np.asarray(y) == 1).sum()), int((np.asarray(y) == 0).sum())
    if min(n0, n1) < minimum:
        return too_few(f"{n1} {what[0]} and {n0} {what[1]} rows", minimum, more)
    return None


def interval_record(ci: Sequence[float] | None, n: int | None, decision: str, n_bootstrap: int | None) -> dict[str, Any]:
    """The decision's fields of a result: ``value_ci95``, ``n`` (rows measured), ``decision``,
    ``n_bootstrap`` (resamples behind the interval); None where unknown."""
    return {"value_ci95": None if ci is None else [float(ci[0]), float(ci[1])], "n": None if n is None else int(n),
            "decision": decision, "n_bootstrap": None if n_bootstrap is None else int(n_bootstrap)}
