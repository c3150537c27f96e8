"""The body of stage ``train@{arch}``: one arch on the cached train split, selected on val; single process, or re-launched
under torchrun when train.nproc > 1 or distributed.nnodes > 1 (NCCL on GPU, gloo on CPU; global
rank 0, on node 0, writes checkpoints, dvclive curves and metrics).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
    from dhs.models.loader import preprocess_from_params
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

    from dhs.models.checkpoint import TrainingError, set_aside_unusable
    from dhs.imaging.cache import cache_manifest, require_splits

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
