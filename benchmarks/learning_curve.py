"""The finder's discoverable completeness against its training budget: is it short of data and
steps, or of something training cannot give?

    python benchmarks/learning_curve.py [--arch small_cnn] [--steps 150 500] [--with-default]
        [--params params.yaml] [--cache data/cache] [--work /tmp/learning_curve] [--device cpu]

Trains the arch of ``--arch`` with the train stage's own loop (``dhs.finder.training.train``) on
the cached train split for each budget of ``--steps`` (one epoch of that many steps, every other
setting from params.yaml), scores the evaluation split (``completeness.eval_split``) with the best
checkpoint, sets thresholds at each FPR of ``evaluation.fprs`` on its controls (pass: score >
threshold) and prints the sky-weighted completeness of every lens and of the LensPop-discoverable
ones (``dhs.measurement.weighted``: sum w f / sum w with the region bootstrap), the numbers of the
completeness stage's ``sky`` block. ``--with-default`` adds the pipeline's own trained finder
(data/models/<arch>, the budget of params.yaml) as the last row, scored the same way. Models are
written under ``--work``, never over data/models. On a GPU the same command continues the curve
(``--steps 5000 25000 --device cuda``; benchmarks/gpu_check.py runs it).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]


def measure(scores: pd.DataFrame, fprs, n_boot: int = 500, seed: int = 1, confidence: float = 0.95) -> dict:
    """Thresholds on the table's controls and the sky-weighted completeness at each FPR."""
    from dhs.measurement.measure import fpr_name
    from dhs.measurement.weighted import sky_headline
    from dhs.evaluation.intervals import bootstrap_multiplicities
    from dhs.evaluation.thresholds import threshold_at_fpr

    ctl = scores[scores["label"] == 0]["score"].to_numpy(float)
    inj = scores[scores["label"] == 1].reset_index(drop=True)
    thresholds = {fpr_name(f): threshold_at_fpr(ctl, f).score for f in fprs}
    regions = np.unique(inj["region_id"].to_numpy(np.int64))
    return sky_headline(inj, thresholds, regions, bootstrap_multiplicities(len(regions), n_boot, seed), confidence)


def row(label: str, steps: int, images: int, head: dict, fprs) -> list[str]:
    from dhs.measurement.measure import fpr_name

    out = [label, f"{steps:,}", f"{images:,}"]
    for f in fprs:
        c = (head.get(fpr_name(f)) or {}).get("discoverable") or {}
        a = (head.get(fpr_name(f)) or {}).get("all") or {}
        disc = "-" if c.get("completeness") is None else f"{c['completeness']:.3f} [{c['boot_lo']:.3f}, {c['boot_hi']:.3f}]"
        out.append(f"{disc} / {a['completeness']:.3f}" if a.get("completeness") is not None else f"{disc} / -")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="small_cnn")
    ap.add_argument("--steps", type=int, nargs="*", default=[150, 500], help="training budgets, in steps of train.batch_size")
    ap.add_argument("--with-default", action="store_true", help="add data/models/<arch> (the pipeline's own finder) as the last row")
    ap.add_argument("--params", default=str(REPO / "params.yaml"))
    ap.add_argument("--cache", default=str(REPO / "data" / "cache"))
    ap.add_argument("--models", default=str(REPO / "data" / "models"))
    ap.add_argument("--work", default="/tmp/learning_curve", help="where the budgets' models are written")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--build-cache", action="store_true", help="run the stamps stage first when --cache does not exist")
    a = ap.parse_args(argv)
    if any(s < 1 for s in a.steps):
        raise SystemExit(f"--steps must be positive, got {a.steps}")

    from dhs.evaluation.scores import score_table
    from dhs.models.checkpoint import load_trained
    from dhs.models.inference import score_split
    from dhs.models.loader import preprocess_from_params
    from dhs.finder.training import TrainConfig, train
    from dhs.params import load as load_params
    from dhs.imaging.cache import open_split

    if a.build_cache and not Path(a.cache).is_dir():
        from dhs.stamps import stage as stamps_stage

        work = Path(a.work)
        stamps_stage.run(a.params, str(work / "stamps"), str(work / "stamps.json"), a.cache, progress=False)
    p = load_params(a.params)
    fprs = tuple(p["evaluation"]["fprs"])
    split_name = p["completeness"]["eval_split"]
    norm, augment = preprocess_from_params(p["preprocess"], p.source)
    base = TrainConfig.from_params(p["train"], a.arch, p.source)
    split = open_split(a.cache, split_name)
    meta = split.stamp_meta()
    if "discoverable" not in meta.columns:
        raise SystemExit(f"{a.cache}: the {split_name} split has no discoverable column (rerun the stamps stage)")
    rows = []
    for steps in a.steps:
        cfg = dataclasses.replace(base, epochs=1, steps_per_epoch=steps, warmup_steps=min(base.warmup_steps, max(1, steps // 10)),
                                  device=a.device, preload="off" if a.device == "cpu" else base.preload)
        out = Path(a.work) / f"{a.arch}-{steps}"
        t0 = time.perf_counter()
        m = train(cfg, a.cache, out, norm, augment, progress=False)
        tm = load_trained(out, a.device)
        scores = score_table(split_name, meta, score_split(tm, split, progress=False))
        rows.append(row(f"{steps} steps", steps, steps * cfg.batch_size, measure(scores, fprs), fprs))
        print(f"  {steps} steps: best val AUC {m['best']['auc']:.4f} at epoch {m['best']['epoch']} ({time.perf_counter() - t0:.0f} s)",
              flush=True)
    if a.with_default:
        tm = load_trained(Path(a.models) / a.arch, a.device)
        scores = score_table(split_name, meta, score_split(tm, split, progress=False))
        total = base.epochs * base.steps_per_epoch
        rows.append(row("the pipeline's finder", total, total * base.batch_size, measure(scores, fprs), fprs))
    head = ["budget", "steps", "images"] + [f"discoverable [95%] / all, FPR {f:g}" for f in fprs]
    print(f"\n{a.arch} on the {split_name} split: sky-weighted completeness of LensPop-discoverable lenses (region bootstrap) "
          f"and of every lens, by training budget")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
