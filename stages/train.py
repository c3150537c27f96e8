"""Stage `train@{arch}`: train one architecture on the cached train split, select on val.

Runs single-process, or re-launches itself under torchrun when train.nproc > 1 (NCCL on GPU,
gloo on CPU); rank 0 writes checkpoints, dvclive curves and metrics.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from dhs import atomic
from dhs.finder.loader import preprocess_from_params
from dhs.params import ParamsError, load_params, section
from dhs.finder.training import TrainConfig, TrainingError, train


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--arch", required=True)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--cache", default="data/cache")
    ap.add_argument("--models", default="data/models")
    ap.add_argument("--metrics", default="metrics/train")
    ap.add_argument("--live", default="dvclive")
    args = ap.parse_args(argv)
    try:
        params = load_params(args.params)
        cfg = TrainConfig.from_params(section(params, "train", source=args.params), args.arch)
        norm, augment = preprocess_from_params(section(params, "preprocess", source=args.params))
    except (ParamsError, ValueError) as exc:
        print(f"train: FAILED: {exc}", file=sys.stderr)
        return 2
    if cfg.nproc > 1 and "RANK" not in os.environ:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={cfg.nproc}", __file__, *sys.argv[1:]]
        return subprocess.call(cmd)
    distributed = "RANK" in os.environ
    if distributed:
        import torch
        import torch.distributed as dist

        dist.init_process_group("nccl" if torch.cuda.is_available() and cfg.device != "cpu" else "gloo")
        if torch.cuda.is_available() and cfg.device != "cpu":
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    rank = int(os.environ.get("RANK", 0))
    live = None
    if rank == 0:
        from dvclive import Live

        live = Live(dir=str(Path(args.live) / args.arch), save_dvc_exp=False, dvcyaml=None, resume=True)
    try:
        metrics = train(cfg, args.cache, Path(args.models) / args.arch, norm, augment, live=live)
    except TrainingError as exc:
        print(f"train {args.arch}: FAILED: {exc}", file=sys.stderr)
        return 2
    finally:
        if live is not None:
            live.end()
        if distributed:
            import torch.distributed as dist

            dist.destroy_process_group()
    if rank == 0:
        atomic.write_json(Path(args.metrics) / f"{args.arch}.json", metrics)
        b = metrics["best"]
        print(f"train {args.arch}: best val loss {b['loss']:.4f} (AUC {b['auc']:.4f}) at epoch {b['epoch']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
