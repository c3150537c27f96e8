"""Run every gate for one trained model on the cache: the body of stage ``gates@{arch}``.

Rows: the model-based gates score a seeded random subset of ``n_eval`` test stamps (all of
them with ``n_eval: 0``); the core-only classifier is fitted on ``core_n_train`` train stamps
and scored on the same test subset; the ring probe uses the first ``n_probe`` controls of that
subset; the shuffle gate all its injections. The "detected" threshold (controls' 1% false-
positive rate) is the 99th percentile of the subset's control logits.

Returns the metrics dict (``metrics/gates/{arch}.json``) and a dict of example images and
logits for the figure.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pandas as pd

from dhs.evaluation.auc import auroc
from dhs.evaluation.scores import sigmoid
from dhs.imaging.cache import open_split
from dhs.gates.config import GatesConfig
from dhs.gates.core import core_masked_gate, core_only_gate
from dhs.gates.metadata import metadata_gate
from dhs.gates.pixels import ScoreFn, read_rows
from dhs.gates.probes import ring_probe_gate
from dhs.gates.result import skipped, tally_verdicts
from dhs.evaluation.thresholds import threshold_at_fpr
from dhs.gates.shift import operating_thresholds, shift_gate
from dhs.gates.shuffle import shuffle_gate
from dhs.gates.splits import split_integrity_gate
from dhs.models.loader import NormConfig
from dhs.simulate.config import SimConfig

GATE_ORDER = ("core_only", "metadata_only", "core_masked", "ring_probe", "annulus_shuffle", "shift", "split_integrity")
FPR_DETECT = 0.01


def subset_rows(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted random k of range(n) (all when k == 0 or k >= n)."""
    if k == 0 or k >= n:
        return np.arange(n)
    return np.sort(rng.choice(n, k, replace=False))


def run_gates(score: ScoreFn | None, norm: NormConfig, cache_dir: str | Path, baseline_metrics: str | Path, cfg: GatesConfig,
              survey: SimConfig, log=print, completeness_metrics: dict | None = None, fprs=(0.1, 0.01, 0.001),
              min_expected_controls: float = 10.0) -> tuple[dict, dict]:
    """All gates; ``score`` maps nMgy images (+ metadata) to the model's logits, ``norm`` is the
    normalisation the model was trained with, ``survey`` the simulator's configuration (pixel
    scale, PSF, sub-pixels and priors the probes render with), ``completeness_metrics`` the
    completeness stage's metrics (its operating thresholds, for the shift gate)."""
    t0 = time.perf_counter()
    splits = {s: open_split(cache_dir, s) for s in ("train", "val", "test")}
    results: dict[str, dict] = {}
    timings: dict[str, float] = {}

    def timed(name, fn):
        t = time.perf_counter()
        results[name] = fn()
        timings[name] = round(time.perf_counter() - t, 2)
        log(f"gates: {name} {results[name]['status']} ({timings[name]:.1f} s)")

    timed("split_integrity", lambda: split_integrity_gate({s: sp.meta for s, sp in splits.items()}))
    timed("metadata_only", lambda: metadata_gate(baseline_metrics, cfg))

    test, train = splits["test"], splits["train"]
    rows = subset_rows(len(test), cfg.n_eval, np.random.default_rng([cfg.seed, 1]))
    imgs = read_rows(test.images, rows)
    meta = test.meta.iloc[rows].reset_index(drop=True)
    y = test.labels[rows].astype(int)
    tr_rows = subset_rows(len(train), cfg.core_n_train, np.random.default_rng([cfg.seed, 2]))
    st_tr = train.norm_stats(norm.annulus_inner_frac, norm.annulus_outer_frac)
    st_te = test.norm_stats(norm.annulus_inner_frac, norm.annulus_outer_frac)
    timed("core_only", lambda: core_only_gate(read_rows(train.images, tr_rows, dtype=None), train.labels[tr_rows].astype(int),
                                              imgs, y, norm, cfg, None if st_tr is None else st_tr[tr_rows],
                                              None if st_te is None else st_te[rows], meta, survey.pixel_scale_arcsec))

    if score is None:   # a finder given as a score table scores no probed stamps
        why = ("the finder is a score table, which scores only the stamps it lists; this gate scores probed stamps "
               "(declare the finder's model file to run it)")
        for name in ("core_masked", "ring_probe", "annulus_shuffle", "shift"):
            results[name] = skipped(name, None, "needs a finder that scores new stamps", why)
        ordered = [results[k] for k in GATE_ORDER]
        metrics = {**tally_verdicts(ordered), "enforce": cfg.enforce, "gates": {r["name"]: r for r in ordered},
                   "n_eval": int(len(rows)), "n_eval_injections": int(y.sum()), "n_eval_controls": int((y == 0).sum()),
                   "threshold_logit_fpr1pct": None, "auc_test_subset": None, "normalisation": dataclasses.asdict(norm),
                   "params": dataclasses.asdict(cfg)}
        log(f"gates: timings (s): {dict(timings, total=round(time.perf_counter() - t0, 2))}")
        return metrics, {"labels": y}

    t = time.perf_counter()
    logits = score(imgs, meta)
    timings["score_test_subset"] = round(time.perf_counter() - t, 2)
    ctl_logits = logits[y == 0]
    # the completeness stage's convention (pass: logit > threshold at FPR on controls); sigmoid is monotone
    thr = threshold_at_fpr(ctl_logits, FPR_DETECT).score if len(ctl_logits) else float("inf")
    ex_mask, ex_ring, ex_shuf = {}, {}, {}
    timed("core_masked", lambda: core_masked_gate(score, imgs, y, meta, cfg, survey.pixel_scale_arcsec, logits_before=logits,
                                                  examples=ex_mask))
    ctl = np.flatnonzero(y == 0)[: cfg.n_probe]
    timed("ring_probe", lambda: ring_probe_gate(score, imgs[ctl], meta.iloc[ctl].reset_index(drop=True), cfg, survey, thr, ex_ring,
                                                logits_control=logits[ctl]))
    inj = np.flatnonzero(y == 1)
    probe_ctl = (imgs[ctl], meta.iloc[ctl].reset_index(drop=True), logits[ctl])
    timed("annulus_shuffle", lambda: shuffle_gate(score, imgs[inj], meta.iloc[inj].reset_index(drop=True), ctl_logits, cfg, thr, ex_shuf,
                                                  logits_real=logits[inj], probe_controls=probe_ctl))

    shift_rows = subset_rows(len(test), cfg.shift_n_eval, np.random.default_rng([cfg.seed, 3]))
    shift_imgs = imgs if np.array_equal(shift_rows, rows) else read_rows(test.images, shift_rows)
    shift_meta = meta if np.array_equal(shift_rows, rows) else test.meta.iloc[shift_rows].reset_index(drop=True)
    shift_y = test.labels[shift_rows].astype(int)
    ex_shift: dict = {}

    def run_shift():
        lg = logits if np.array_equal(shift_rows, rows) else score(shift_imgs, shift_meta)
        thresholds = operating_thresholds(completeness_metrics, sigmoid(lg[shift_y == 0]), fprs, min_expected_controls)
        return shift_gate(score, shift_imgs, shift_meta, shift_y, lg, cfg, thresholds, min_expected_controls, ex_shift)

    timed("shift", run_shift)
    del shift_imgs

    ordered = [results[k] for k in GATE_ORDER]
    metrics = {**tally_verdicts(ordered), "enforce": cfg.enforce, "gates": {r["name"]: r for r in ordered},
               "n_eval": int(len(rows)), "n_eval_injections": int(y.sum()), "n_eval_controls": int((y == 0).sum()),
               "threshold_logit_fpr1pct": thr, "auc_test_subset": auroc(y, logits) if 0 < y.sum() < len(y) else None, "normalisation": dataclasses.asdict(norm),
               "params": dataclasses.asdict(cfg)}
    # timings are printed, not kept in the metrics: metrics must be a function of data, params and seed
    log(f"gates: timings (s): {dict(timings, total=round(time.perf_counter() - t0, 2))}")
    examples = {"mask": ex_mask, "ring": ex_ring, "shuffle": ex_shuf, "shift": ex_shift, "logits": logits, "labels": y,
                "sky_sigma_r": pd.to_numeric(meta.get("sky_sigma_r_nmgy", pd.Series(np.nan, index=meta.index)), errors="coerce").to_numpy()}
    return metrics, examples


def table_lines(metrics: dict) -> list[str]:
    """A PASS/FAIL table for the console, one gate per line, failures impossible to miss."""
    lines = [f"{'gate':<17} {'status':<6} {'value':>9} {'threshold':>9}  rule"]
    for r in metrics["gates"].values():
        v = "-" if r["value"] is None else f"{r['value']:.4g}"
        t = "-" if r["threshold"] is None else f"{r['threshold']:.4g}"
        mark = {"PASS": "PASS", "FAIL": "FAIL <<<", "SKIP": "SKIP <<<"}[r["status"]]
        lines.append(f"{r['name']:<17} {mark:<6} {v:>9} {t:>9}  {r['rule']}")
    for r in metrics["gates"].values():
        if r["status"] != "PASS":
            lines.append(f"  {r['status']} {r['name']}: {r['detail']}")
    verdict = "ALL GATES PASS" if metrics["all_passed"] else \
        f"GATES FAILED: {', '.join(metrics['failed'] + metrics['skipped'])} ({metrics['n_fail']} FAIL, {metrics['n_skip']} SKIP)"
    lines.append(verdict)
    return lines
