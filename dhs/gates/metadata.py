"""Metadata-only gate (docs/conventions.md, shortcuts): the baseline stage's leak detector, a classifier on
observing conditions alone (PSF, depth, extinction, mask fractions), must not predict the
injection label. Its test AUC (``leak.auc_test`` in ``metrics/baseline.json``) must stay below
``metadata_auc_max`` (0.6): injected and control stamps must differ only by the arc.

The gate decides on the interval the baseline stage wrote beside the AUC (``leak.auc_test_ci95``,
its bootstrap over ``baseline.n_bootstrap`` resamples): FAIL only when the whole interval is >=
``metadata_auc_max`` (``dhs.gates.result.decide``); without an interval the value alone decides,
and the detail says so. Where the file gives the test counts (``leak.n_test``,
``leak.n_test_positive``), fewer than ``min_rows_per_class`` of a class SKIP.
"""

from __future__ import annotations

import json
from pathlib import Path

from dhs.gates.config import GatesConfig
from dhs.gates.result import CONSISTENT, Limit, decide, gate_result, interval_record, skipped, too_few


def metadata_limit(cfg: GatesConfig) -> Limit:
    return Limit("metadata_auc_max", cfg.metadata_auc_max)


META_RULE = metadata_limit(GatesConfig.from_params({})).rule("metadata-only (observing conditions) test AUC (interval: the baseline's bootstrap)")
MORE_ROWS = "the test split's size (the baseline stage's test rows)"


def metadata_gate(baseline_metrics: str | Path, cfg: GatesConfig) -> dict:
    name, thr = "metadata_only", cfg.metadata_auc_max
    path = Path(baseline_metrics)
    if not path.is_file():
        return skipped(name, thr, META_RULE, f"{path} not found; run `dvc repro baseline`")
    try:
        leak = json.loads(path.read_text())["leak"]
        auc = float(leak["auc_test"])
    except (ValueError, KeyError, TypeError) as exc:
        return skipped(name, thr, META_RULE, f"{path} has no leak.auc_test ({type(exc).__name__}: {exc}); rerun `dvc repro baseline`")
    n, n_pos = leak.get("n_test"), leak.get("n_test_positive")
    counted = isinstance(n, int) and isinstance(n_pos, int)
    if counted and min(n_pos, n - n_pos) < cfg.min_rows_per_class:
        return skipped(name, thr, META_RULE, too_few(f"the baseline's test split has {n_pos} injections and {n - n_pos} controls",
                                                     cfg.min_rows_per_class, MORE_ROWS), n=n, min_rows_per_class=cfg.min_rows_per_class)
    ci = leak.get("auc_test_ci95")
    boot = leak.get("auc_test_bootstrap") if isinstance(leak.get("auc_test_bootstrap"), dict) else {}
    try:
        ci = [float(ci[0]), float(ci[1])] if isinstance(ci, (list, tuple)) and len(ci) == 2 else None
    except (TypeError, ValueError):   # a null or non-number bound: no interval
        ci = None
    status, decision, why = decide(auc, ci, metadata_limit(cfg), more_rows=MORE_ROWS,
                                   no_ci=f"{path} has no leak.auc_test_ci95; baseline.n_bootstrap > 0 writes one")
    detail = (f"observing conditions alone predict the label with test AUC {auc:.3f} ({why}); " +
              ("injections and controls were drawn from different conditions: a CNN can score those instead of the arc"
               if status == "FAIL" else
               "injections and controls are not shown to differ in their conditions"
               if decision == CONSISTENT else "injections and controls share their conditions"))
    n_boot = boot.get("n") if isinstance(boot.get("n"), int) else None
    return gate_result(name, status, auc, thr, META_RULE, detail, **interval_record(ci, n if counted else None, decision, n_boot),
                       auc_ci95=ci, features=leak.get("features"), source=str(path))
