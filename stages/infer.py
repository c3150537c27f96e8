"""Stage `infer@{arch}`: score every val and test stamp of the cache exactly once.

Writes data/scores/{arch}.parquet (task_id, split, label, logit, score and every scalar
metadata column, see dhs.evaluation.scores) and metrics/infer/{arch}.json (rows per split and label, and
the rows the stamps stage rejected before the cache, so every input row is accounted for).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from dhs import atomic
from dhs.stamps.cache import CacheError, open_split
from dhs.finder.inference import load_trained, score_split
from dhs.params import ParamsError, load_params, section
from dhs.evaluation.regression import theta_e_regression_table
from dhs.evaluation.scores import SCORE_SPLITS, ScoresError, check_scores, score_table
from dhs.finder.training import TrainingError

def theta_figure(scores: pd.DataFrame, path: Path, arch: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    inj = scores[(scores["label"] == 1) & (scores["split"] == "test")]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    sc = axes[0].scatter(inj["theta_e_arcsec"], inj["theta_e_pred_arcsec"], c=inj["theta_e_over_psf"], s=4, cmap="viridis")
    lim = [0, float(max(inj["theta_e_arcsec"].max(), inj["theta_e_pred_arcsec"].max())) * 1.05]
    axes[0].plot(lim, lim, "k--", lw=1)
    axes[0].set(xlabel="true theta_E [arcsec]", ylabel="predicted theta_E [arcsec]", title=f"{arch}: theta_E head (test injections)")
    fig.colorbar(sc, ax=axes[0], label="theta_E / PSF")
    axes[1].scatter(inj["theta_e_over_psf"], inj["theta_e_pred_arcsec"] - inj["theta_e_arcsec"], s=4, alpha=0.5)
    axes[1].axhline(0, color="k", lw=1)
    axes[1].set(xlabel="theta_E / PSF", ylabel="predicted - true [arcsec]", title="residual")
    atomic.save_figure(path, fig, dpi=100, bbox_inches="tight")


INFER_KEYS = {"batch_size", "device", "splits", "theta_psf_bins"}


def run(arch: str, params_path: str = "params.yaml", cache_dir: str = "data/cache", models_dir: str = "data/models",
        scores_dir: str = "data/scores", metrics_dir: str = "metrics/infer", stamps_metrics: str = "metrics/stamps.json",
        progress: bool = True, plots_dir: str = "plots/regression") -> dict:
    p = section(load_params(params_path), "infer", INFER_KEYS, params_path)
    splits = list(p.get("splits", SCORE_SPLITS))
    if not splits or set(splits) - set(SCORE_SPLITS):
        raise ParamsError(f"{params_path}: infer.splits must be a non-empty subset of {list(SCORE_SPLITS)}, got {splits}")
    batch = int(p.get("batch_size", 512))
    if batch < 1:
        raise ParamsError(f"{params_path}: infer.batch_size must be >= 1")
    t0 = time.perf_counter()
    tm = load_trained(Path(models_dir) / arch, str(p.get("device", "auto")))
    if tm.spec.arch != arch:
        raise TrainingError(f"{tm.checkpoint} holds a {tm.spec.arch} model, not {arch}")
    tables, counts = [], {}
    for name in splits:
        split = open_split(cache_dir, name)
        if len(split) == 0:
            raise ScoresError(f"split {name} of {cache_dir} is empty; nothing to score (check the stamps stage's metrics)")
        logits, theta = score_split(tm, split, batch, progress, return_theta=True)
        table = score_table(name, split.meta, logits)
        if theta is not None:
            table["theta_e_pred_arcsec"] = theta
        tables.append(table)
        counts[name] = {"scored": len(table), "injection": int(table["label"].sum()), "control": int((table["label"] == 0).sum())}
    scores = check_scores(pd.concat(tables, ignore_index=True), source=f"scores of {arch}")
    upstream = {}
    if Path(stamps_metrics).exists():
        by = json.loads(Path(stamps_metrics).read_text()).get("by_split_label", {})
        upstream = {s: {lab: v.get("rejected", {}) for lab, v in by.get(s, {}).items()} for s in splits}
    out = Path(scores_dir) / f"{arch}.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out.parent, suffix=".parquet.tmp", delete=False) as f:
        tmp = Path(f.name)
    try:
        scores.to_parquet(tmp, index=False)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    regression = None
    if tm.spec.theta_head:  # the multi-head model: theta_E bias and scatter against the truth
        edges = [float(e) for e in p.get("theta_psf_bins", [0.0, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0])]
        if len(edges) < 2 or not all(b > a for a, b in zip(edges, edges[1:])):
            raise ParamsError(f"{params_path}: infer.theta_psf_bins must be >= 2 increasing numbers, got {edges}")
        reg = theta_e_regression_table(scores, edges, "test" if "test" in splits else splits[0])
        regression = {r["theta_e_over_psf_bin"]: {k: v for k, v in r.items() if k != "theta_e_over_psf_bin"} for r in reg.to_dict("records")}
        atomic.write_text(Path(plots_dir) / arch / "theta_e.csv", reg.to_csv(index=False))
        theta_figure(scores, Path(plots_dir) / arch / "theta_e.png", arch)
    else:  # the directory is a DVC output either way
        atomic.write_text(Path(plots_dir) / arch / "theta_e.csv", "theta_e_over_psf_bin,n\n# no theta_E head: train.theta_head is false\n")
    metrics = {"arch": arch, "checkpoint": tm.checkpoint.name, "checkpoint_step": tm.step, "device": tm.device.type,
               "rows_scored": len(scores), "unique_task_ids": int(scores["task_id"].nunique()), "by_split": counts,
               "rejected_before_cache": upstream, "normalisation": tm.norm.mode,
               **({"theta_e_regression": regression} if regression is not None else {})}
    atomic.write_json(Path(metrics_dir) / f"{arch}.json", metrics)
    per_split = ", ".join(f"{k} {v['scored']}" for k, v in counts.items())
    print(f"infer {arch}: scored {len(scores)} stamps ({per_split}) "
          f"on {tm.device.type} in {time.perf_counter() - t0:.1f} s -> {out}")
    return metrics


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", required=True)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--cache", default="data/cache")
    ap.add_argument("--models", default="data/models")
    ap.add_argument("--scores", default="data/scores")
    ap.add_argument("--metrics", default="metrics/infer")
    args = ap.parse_args(argv)
    try:
        run(args.arch, args.params, args.cache, args.models, args.scores, args.metrics)
    except (ParamsError, CacheError, ScoresError, TrainingError) as exc:
        print(f"infer {args.arch}: FAILED: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
