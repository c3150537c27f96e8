"""The bodies of stages ``train@{arch}`` and ``infer@{arch}``.

train: one arch on the cached train split, selected on val; single process, or re-launched
under torchrun when train.nproc > 1 or distributed.nnodes > 1 (NCCL on GPU, gloo on CPU; global
rank 0, on node 0, writes checkpoints, dvclive curves and metrics).

infer: every val and test stamp of the cache scored exactly once. Writes data/scores/{arch}.parquet
(task_id, split, label, logit, score and every scalar metadata column, see
dhs.evaluation.scores) and metrics/infer/{arch}.json (rows per split and label, and the rows the
stamps stage rejected before the cache, so every input row is accounted for).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from dhs import atomic, headline
from dhs.params import Params, ParamsError, as_params


def torchrun_command(nproc: int, nodes: Mapping[str, Any], node_rank: int) -> list[str]:
    """This script again under torchrun: ``nproc`` processes here; on one machine a standalone
    rendezvous, on ``nodes['nnodes']`` machines a static one at master_addr:master_port where
    this machine is ``node_rank`` (global rank 0, which writes every output, is on node 0)."""
    if nodes["nnodes"] == 1:
        where = ["--standalone"]
    else:
        if not 0 <= node_rank < nodes["nnodes"]:
            raise ParamsError(f"--node-rank {node_rank} must be in [0, {nodes['nnodes'] - 1}] (distributed.nnodes = {nodes['nnodes']})")
        where = [f"--nnodes={nodes['nnodes']}", f"--node_rank={node_rank}", f"--master_addr={nodes['master_addr']}",
                 f"--master_port={nodes['master_port']}"]
    return [sys.executable, "-m", "torch.distributed.run", *where, f"--nproc_per_node={nproc}", sys.argv[0], *sys.argv[1:]]


def run_train(arch: str, params: str | Params = "params.yaml", cache_dir: str = "data/cache", models_dir: str = "data/models",
              metrics_dir: str = "metrics/train", live_dir: str = "dvclive", node_rank: str | int = 0) -> int:
    """Train ``arch``; the exit status (that of the torchrun job when it re-launches itself).
    ``node_rank``: this machine's place in a multi-node run (``distributed``); 0 on one machine."""
    from dhs.finder.loader import preprocess_from_params
    from dhs.finder.training import THROUGHPUT_FILE, TrainConfig, train

    p = as_params(params).require("train")
    cfg = TrainConfig.from_params(p["train"], arch, p.source)
    norm, augment = preprocess_from_params(p["preprocess"], p.source)
    node_rank = int(node_rank)
    sim = simulated_survey(p, cfg.data) if cfg.data == "simulate" else None
    if "RANK" not in os.environ:  # once, before any rank starts
        check_nproc(cfg.nproc, cfg.device, p.source)
        check_before_training(cfg, arch, cache_dir, Path(models_dir) / arch)
    nodes = p["distributed"]
    if (cfg.nproc > 1 or nodes["nnodes"] > 1) and "RANK" not in os.environ:
        return subprocess.call([sys.executable, "-c", _END_WITH_PARENT, *torchrun_command(cfg.nproc, nodes, node_rank)])
    distributed = "RANK" in os.environ
    if distributed:
        import torch
        import torch.distributed as dist

        dist.init_process_group("nccl" if torch.cuda.is_available() and cfg.device != "cpu" else "gloo")
        if torch.cuda.is_available() and cfg.device != "cpu":
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    rank = int(os.environ.get("RANK", 0))
    try:
        metrics = train(cfg, cache_dir, Path(models_dir) / arch, norm, augment, live_dir=Path(live_dir) / arch if rank == 0 else None,
                        sim=sim)
    finally:
        if distributed:
            import torch.distributed as dist

            dist.destroy_process_group()
    if rank == 0:
        headline.write("train", Path(metrics_dir) / f"{arch}.json", metrics)
        # the timing of the run that trained these weights (a rebuild without training keeps it)
        timing = Path(models_dir) / arch / THROUGHPUT_FILE
        atomic.write_text(Path(metrics_dir) / f"{arch}.throughput.json", timing.read_text() if timing.exists() else
                          json.dumps({"steps_timed": 0, "note": "these weights were trained before the stage kept its timing"}) + "\n")
        b = metrics["best"]
        print(f"train {arch}: best val loss {b['loss']:.4f} (AUC {b['auc']:.4f}) at epoch {b['epoch']}")
    return 0


# the cached splits training reads: train and val, and test for the best checkpoint's test metrics
TRAIN_SPLITS = ("train", "val")


def simulated_survey(p: Params, data: str):
    """The survey that renders the training batches with ``train.data: simulate``: the one the
    stamps stage simulated, so the batches and the cached val/test split come from one model."""
    from dhs.simulate.config import SimConfig

    if p["stamps"]["source"] != "synthetic":
        raise ParamsError(f"{p.source}: train.data is {data!r}, which renders batches with the simulated survey, but "
                          f"stamps.source is {p['stamps']['source']!r}: the val and test stamps would come from another "
                          f"population; use train.data: cache")
    return SimConfig.from_params(p["simulate"])


def check_nproc(nproc: int, device: str, source: str = "params.yaml") -> None:
    """train.nproc ranks on this machine: at most one per GPU on a GPU, one per core on the CPU
    (more only share the same devices, each with its own copy of model and data)."""
    import torch

    gpu = device != "cpu" and torch.cuda.is_available()
    have = torch.cuda.device_count() if gpu else (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    if nproc > have:
        what = f"{have} GPU(s)" if gpu else f"{have} CPU core(s) available to this process"
        raise ParamsError(f"{source}: train.nproc is {nproc} but this machine has {what}: each rank holds its own model and "
                          f"batches, so more ranks than {'GPUs' if gpu else 'cores'} only run it out of memory; set train.nproc "
                          f"<= {have} (or distributed.nnodes for more machines)")


def check_before_training(cfg, arch: str, cache_dir: str, model_dir: Path) -> None:
    """What must hold before training starts, each refused with a message naming the problem:
    the cache has the splits training reads (an evaluation-only dataset has not); with a theta_E
    head, every cached injection has a finite theta_E > 0 (a NaN must never become a regression
    target of 0); and a checkpoint that cannot be resumed is set aside, not a wall."""
    import numpy as np

    from dhs.finder.checkpoint import TrainingError, set_aside_unusable
    from dhs.stamps.cache import cache_manifest, require_splits

    require_splits(cache_dir, ("val",) if cfg.data == "simulate" else TRAIN_SPLITS, f"train@{arch}")
    if cfg.theta_head and cfg.data == "cache":
        meta = pd.read_parquet(Path(cache_dir) / "train" / "meta.parquet", columns=["task_id", "is_control", "theta_e_arcsec"])
        theta = pd.to_numeric(meta["theta_e_arcsec"], errors="coerce").to_numpy(np.float64)
        bad = (meta["is_control"].to_numpy() == 0) & ~(np.isfinite(theta) & (theta > 0))
        if bad.any():
            raise TrainingError(f"train.theta_head is true but {int(bad.sum())} cached train injection(s) have no finite "
                                f"theta_e_arcsec > 0 (e.g. task_id {meta['task_id'][bad].head(3).tolist()}); rebuild the cache "
                                f"with `dvc repro --force stamps` (validation rejects them) or set train.theta_head: false")
    manifest = cache_manifest(cache_dir) or {}
    for message in set_aside_unusable(model_dir, arch, manifest.get("stamp_size")):
        print(f"train {arch}: {message}", file=sys.stderr)


# run before torchrun in its own (single-threaded) process, then exec'ed into it: SIGTERM when
# this stage dies (PR_SET_PDEATHSIG survives exec), so a killed stage leaves no training behind;
# torchrun ends its ranks on SIGTERM
_END_WITH_PARENT = """
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
except (OSError, AttributeError):
    pass
if os.getppid() == 1:
    sys.exit(143)
os.execv(sys.argv[1], sys.argv[1:])
"""


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
    from dhs.finder.external import ExternalFinder, check_table_ids
    from dhs.finder.inference import load_finder, score_split
    from dhs.stamps.cache import open_split

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


def run_external(arch: str, params: str | Params = "params.yaml", models_dir: str = "data/models",
                 metrics_dir: str = "metrics/external") -> dict:
    """Stage ``external@{name}``: check the external finder ``name`` (finders.external) against its
    spec and pack it into ``data/models/{name}/checkpoint_best.pt`` (dhs.finder.external); writes
    ``metrics/external/{name}.json`` (format, SHA-256, the shapes checked, the probe logits)."""
    from dhs.finder.external import pack

    p = as_params(params).require("finders")
    spec = p["finders"]["external"].get(arch)
    if spec is None:
        raise ParamsError(f"{p.source}: finders.external has no finder {arch!r}; declared: {sorted(p['finders']['external'])}")
    t0 = time.perf_counter()
    metrics = pack(arch, spec, Path(p.source).resolve().parent, Path(models_dir) / arch / "checkpoint_best.pt",
                   "cpu" if spec["device"] == "auto" else spec["device"])
    atomic.write_json(Path(metrics_dir) / f"{arch}.json", metrics)
    shapes = f"input {metrics['input_shape']} -> output {metrics['output_shape']}" if "input_shape" in metrics else \
        f"a score table of {metrics['rows']} rows"
    print(f"external {arch}: {spec['format']} {spec['model']} (sha256 {metrics['model_sha256'][:12]}), {shapes}; packed into "
          f"{Path(models_dir) / arch / 'checkpoint_best.pt'} ({time.perf_counter() - t0:.1f} s)")
    return metrics
