"""Metadata-only gate (docs/conventions.md, shortcuts): the baseline stage's leak detector, a classifier on
observing conditions alone (PSF, depth, extinction, mask fractions), must not predict the
injection label. Its test AUC (``leak.auc_test`` in ``metrics/baseline.json``) must stay below
``metadata_auc_max`` (0.6): injected and control stamps must differ only by the arc.
"""

from __future__ import annotations

import json
from pathlib import Path

from dhs.gates.config import GatesConfig
from dhs.gates.result import gate_result, skipped

META_RULE = "metadata-only (observing conditions) test AUC < metadata_auc_max"


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
    passed = auc < thr
    ci = leak.get("auc_test_ci95")
    detail = (f"observing conditions alone predict the label with test AUC {auc:.3f}" +
              (f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})" if ci else "") + "; " +
              ("injections and controls share their conditions" if passed else
               "injections and controls were drawn from different conditions: a CNN can score those instead of the arc"))
    return gate_result(name, "PASS" if passed else "FAIL", auc, thr, META_RULE, detail, auc_ci95=ci,
                       features=leak.get("features"), source=str(path))
