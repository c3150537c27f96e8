"""The body of stage ``infer@{name}``: every val and test stamp of the cache scored exactly once
by a trained finder or one made elsewhere.

Writes data/scores/{name}.parquet (task_id, split, label, logit, score and every scalar metadata
column, see dhs.evaluation.scores) and metrics/infer/{name}.json (rows per split and label, and the
rows the stamps stage rejected before the cache, so every input row is accounted for).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from dhs import atomic, headline
from dhs.params import Params, as_params


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


def run_infer(arch: str, params: str | Params = "params.yaml", cache_dir: str = "data/cache", models_dir: str = "data/models",
              scores_dir: str = "data/scores", metrics_dir: str = "metrics/infer", stamps_metrics: str = "metrics/stamps.json",
              progress: bool = True, plots_dir: str = "plots/regression") -> dict:
    from dhs.evaluation.regression import theta_e_regression_table
    from dhs.evaluation.scores import ScoresError, check_scores, score_table
    from dhs.models.external import ExternalFinder, check_table_ids
    from dhs.models.inference import load_finder, score_split
    from dhs.imaging.cache import open_split

    p = as_params(params).require("infer")
    inf = p["infer"]
    splits = inf["splits"]
    t0 = time.perf_counter()
    tm = load_finder(Path(models_dir) / arch, inf["device"], arch=arch)
    external = isinstance(tm, ExternalFinder)
    table_ids = None
    if external and tm.table is not None:  # a score table: every stamp of the scored splits, nothing foreign
        present = [s for s in ("train", "val", "test") if (Path(cache_dir) / s / "meta.parquet").exists()]
        table_ids = check_table_ids(tm.table, {s: pd.read_parquet(Path(cache_dir) / s / "meta.parquet", columns=["task_id"])
                                               ["task_id"].astype(str).to_numpy() for s in present}, tuple(splits), arch)
        print(f"infer {arch}: score table of {table_ids['rows']} rows: {table_ids['scored']} scored"
              + (f", {table_ids['ignored']} ids of other splits ignored" if table_ids["ignored"] else ""))
    batch = external and tm.spec["batch_size"] or inf["batch_size"]
    tables, counts = [], {}
    for name in splits:
        split = open_split(cache_dir, name)
        if len(split) == 0:
            raise ScoresError(f"split {name} of {cache_dir} is empty; nothing to score (check the stamps stage's metrics)")
        logits, theta = score_split(tm, split, batch, progress, return_theta=True)
        table = score_table(name, split.stamp_meta(), logits)
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
    with atomic.writing(out) as tmp:
        scores.to_parquet(tmp, index=False)
    regression = None
    if not external and tm.spec.theta_head:  # the multi-head model: theta_E bias and scatter against the truth
        reg = theta_e_regression_table(scores, inf["theta_psf_bins"], "test" if "test" in splits else splits[0])
        regression = {r["theta_e_over_psf_bin"]: {k: v for k, v in r.items() if k != "theta_e_over_psf_bin"} for r in reg.to_dict("records")}
        atomic.write_text(Path(plots_dir) / arch / "theta_e.csv", reg.to_csv(index=False))
        theta_figure(scores, Path(plots_dir) / arch / "theta_e.png", arch)
    else:  # the directory is a DVC output either way
        why = "an external finder" if external else "train.theta_head is false"
        atomic.write_text(Path(plots_dir) / arch / "theta_e.csv", f"theta_e_over_psf_bin,n\n# no theta_E head: {why}\n")
    metrics = {"arch": arch, "checkpoint": tm.checkpoint.name, "checkpoint_step": tm.step, "device": tm.device.type,
               "rows_scored": len(scores), "unique_task_ids": int(scores["task_id"].nunique()), "by_split": counts,
               "rejected_before_cache": upstream, "normalisation": tm.preprocess_label if external else tm.norm.mode,
               **({"external": {"format": tm.format, "model": tm.spec["model"], "model_sha256": tm.model_sha256}} if external else {}),
               **({"score_table": table_ids} if table_ids is not None else {}),
               **({"theta_e_regression": regression} if regression is not None else {})}
    headline.write("infer", Path(metrics_dir) / f"{arch}.json", metrics)
    per_split = ", ".join(f"{k} {v['scored']}" for k, v in counts.items())
    print(f"infer {arch}: scored {len(scores)} stamps ({per_split}) "
          f"on {tm.device.type} in {time.perf_counter() - t0:.1f} s -> {out}")
    return metrics
