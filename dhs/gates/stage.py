"""The body of stage ``gates@{arch}``: every gate of ``dhs.gates`` on the cache with the model's
best checkpoint; metrics/gates/{arch}.json (status PASS / FAIL / SKIP, value and threshold per
gate, and ``all_passed``), plots/gates/{arch}.png, and a PASS/FAIL table on the console.

Exit status (``status``): ``EXIT_OK`` when the gates ran, whatever they found, unless
``gates.enforce`` is true and a gate is not PASS, then ``EXIT_GATE_FAILED`` (dhs.runner;
docs/errors.md).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from dhs import atomic, headline
from dhs.gates.config import GatesConfig
from dhs.gates.plot import plot_gates
from dhs.gates.run import run_gates, table_lines
from dhs.gates.memo import MEMO_FILE, ScoreMemo
from dhs.params import Params, as_params
from dhs.runner import EXIT_GATE_FAILED, EXIT_OK
from dhs.simulate.config import SimConfig


def run(arch: str, params: str | Params = "params.yaml", cache_dir: str = "data/cache", models_dir: str = "data/models",
        baseline_metrics: str = "metrics/baseline.json", metrics_dir: str = "metrics/gates", plots_dir: str = "plots/gates",
        completeness_dir: str = "metrics/completeness", memo_dir: str = "data/gates") -> dict:
    p = as_params(params).require("gates")
    cfg = GatesConfig.from_params(p["gates"], p.source)
    survey = SimConfig.from_params(p["simulate"])   # the survey the ring probe renders its arcs and PSFs with
    from dhs.models.external import ExternalFinder   # torch-heavy: after the params are known to be good
    from dhs.models.inference import load_finder, score_images
    from dhs.models.loader import NormConfig

    t0 = time.perf_counter()
    tm = load_finder(Path(models_dir) / arch, cfg.device, arch=arch)
    external = isinstance(tm, ExternalFinder)
    # the core-only classifier normalises cores as the finder does; a foreign finder without this
    # pipeline's normalisation: as the default normalisation does
    norm = (tm.norm or NormConfig.from_params({})) if external else tm.norm

    def score_now(images, meta):
        return score_images(tm, images, meta, cfg.batch_size)

    # scores of an earlier run of this finder on the same stamps and probes are read back, not recomputed
    # (a change of threshold or limit reruns the stage, not the scoring); dhs.gates.memo
    finder_key = f"{atomic.file_sha256(tm.checkpoint)}|batch {cfg.batch_size}|{tm.device.type}"
    score = memo = ScoreMemo(score_now, finder_key, Path(memo_dir) / arch / MEMO_FILE)
    if external and tm.table is not None:
        score = None   # a score table scores only its own stamps: the probe gates cannot run (an empty memo is kept)
        print(f"gates {arch}: a score table scores no probed stamps; core_masked, ring_probe, annulus_shuffle and shift are SKIP")

    comp_path = Path(completeness_dir) / f"{arch}.json"
    comp = json.loads(comp_path.read_text()) if comp_path.exists() else None
    if comp is None:
        print(f"gates {arch}: {comp_path} not found; the shift gate sets its thresholds on the controls it scores")
    ev = p["evaluation"]
    metrics, examples = run_gates(score, norm, cache_dir, baseline_metrics, cfg, survey, completeness_metrics=comp,
                                  fprs=ev["fprs"], min_expected_controls=ev["min_expected_controls"])
    memo.save()
    if score is not None:
        print(f"gates {arch}: {memo.hits} of {memo.hits + memo.misses} scoring calls read back from {memo.path} "
              f"(same finder, stamps and probes as the last run)")
    metrics = {"arch": arch, "checkpoint": tm.checkpoint.name, "checkpoint_step": tm.step, "device": tm.device.type,
               **({"external": {"format": tm.format, "model": tm.spec["model"], "model_sha256": tm.model_sha256}} if external else {}),
               **metrics}
    headline.write("gates", Path(metrics_dir) / f"{arch}.json", metrics)
    plot_gates(Path(plots_dir) / f"{arch}.png", metrics, examples, arch)
    for line in table_lines(metrics):
        print(f"gates {arch}: {line}")
    print(f"gates {arch}: wrote {Path(metrics_dir) / f'{arch}.json'} and {Path(plots_dir) / f'{arch}.png'} "
          f"({time.perf_counter() - t0:.1f} s)")
    return metrics


def status(metrics: dict, label: str) -> int:
    """``EXIT_GATE_FAILED`` when a gate is not PASS and gates.enforce is true; else ``EXIT_OK`` (a
    failure is said either way)."""
    if not metrics["all_passed"]:
        bad = ", ".join(metrics["failed"] + metrics["skipped"])
        if metrics["enforce"]:
            print(f"{label}: FAIL ({bad}) and gates.enforce is true: stopping", file=sys.stderr)
            return EXIT_GATE_FAILED
        print(f"{label}: FAIL ({bad}); not stopping because gates.enforce is false", file=sys.stderr)
    return EXIT_OK
