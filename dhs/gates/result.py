"""The result record every gate returns, and how results combine.

A gate result is a plain dict (it goes straight into ``metrics/gates/{arch}.json``)::

    {"name": str, "status": "PASS" | "FAIL" | "SKIP", "passed": bool,
     "value": float | None,      # the number the threshold applies to
     "threshold": float | None,  # from params.yaml ``gates``
     "rule": str,                # e.g. "value < threshold", in words
     "detail": str,              # one sentence a user can act on
     ...}                        # further named values (intervals, counts, the other AUCs)

SKIP means the gate could not be evaluated (missing input, too few rows). It is not a pass:
``all_passed`` is true only when every gate is PASS, and ``gates.enforce`` stops on SKIP too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from dhs.evaluation.auc import auroc, bootstrap_auroc

STATUSES = ("PASS", "FAIL", "SKIP")
# below this many rows per class a gate's AUC is too noisy to decide on: SKIP
MIN_ROWS_PER_CLASS = 20


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


def summarise(results: Sequence[dict]) -> dict:
    """{all_passed, n_pass, n_fail, n_skip, failed: [names], skipped: [names]}."""
    by = {s: [r["name"] for r in results if r["status"] == s] for s in STATUSES}
    return {"all_passed": bool(results) and not by["FAIL"] and not by["SKIP"], "n_pass": len(by["PASS"]),
            "n_fail": len(by["FAIL"]), "n_skip": len(by["SKIP"]), "failed": by["FAIL"], "skipped": by["SKIP"]}


def auc_with_ci(y: np.ndarray, s: np.ndarray, n_bootstrap: int, seed: int) -> tuple[float, list[float] | None]:
    """ROC AUC of scores ``s`` for binary labels ``y`` and its 95% percentile-bootstrap interval
    (rows resampled with replacement, stratified by class so every resample has both)."""
    return auroc(y, s), bootstrap_auroc(y, s, None, n_bootstrap, seed, unit="stratified")["ci95"]


def enough_rows(y: np.ndarray, minimum: int = MIN_ROWS_PER_CLASS) -> str | None:
    """None if both classes have >= minimum rows, else the reason to SKIP."""
    n1, n0 = int((np.asarray(y) == 1).sum()), int((np.asarray(y) == 0).sum())
    if min(n0, n1) < minimum:
        return f"{n1} positive and {n0} negative rows; need >= {minimum} of each (raise gates.n_eval or use a larger test split)"
    return None
