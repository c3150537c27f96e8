"""Shortcut and leakage gates for a trained lens finder (docs/conventions.md, shortcuts).

One module per gate, each a pure function returning a result dict (``dhs.gates.result``):

- ``core.core_only_gate``: logistic regression on the central pixels; AUC < ``core_auc_max``.
- ``metadata.metadata_gate``: the baseline stage's conditions-only AUC < ``metadata_auc_max``.
- ``core.core_masked_gate``: model AUROC drop when the core becomes sky noise < ``core_mask_max_auc_drop``.
- ``probes.ring_probe_gate``: a faint ring must not move the score more than a real arc of the
  same flux (+ ``ring_max_excess_logit``).
- ``shuffle.shuffle_gate``: model AUROC of injections against their annulus-shuffled versions
  >= ``shuffle_min_auc``.
- ``splits.split_integrity_gate``: no region, host position or task_id shared between splits.

Each gate with a threshold decides on the 95% interval of its statistic, bootstrapped from the
rows it measured (paired where a statistic is a before/after difference of the same rows): it
FAILs only when the whole interval lies beyond the threshold, and SKIPs with fewer than
``min_rows_per_class`` rows of a class (``result.decide``, ``result.enough_rows``).

``run.run_gates`` runs them all (stage ``gates@{arch}``); thresholds live in ``GatesConfig``.
"""

from dhs.gates.config import GatesConfig
from dhs.gates.result import gate_result, tally_verdicts
from dhs.gates.run import GATE_ORDER, run_gates, table_lines

__all__ = ["GatesConfig", "GATE_ORDER", "gate_result", "run_gates", "tally_verdicts", "table_lines"]
